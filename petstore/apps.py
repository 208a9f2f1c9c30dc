"""The admin app, pointed at the staff console's own site (petstore.admin_site)."""

from django.contrib.admin.apps import AdminConfig


class StaffConsoleConfig(AdminConfig):
    default_site = "petstore.admin_site.StaffConsoleSite"
