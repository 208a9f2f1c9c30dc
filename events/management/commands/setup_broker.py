"""Declare the RabbitMQ exchanges and queues the system relies on."""

from django.core.management.base import BaseCommand

from events.broker import broker_connection, declare_topology


class Command(BaseCommand):
    help = "Declare petstore.events, its alternate exchange, petstore.unrouted and the event stream."

    def handle(self, *args, **options):
        with broker_connection() as conn:
            declare_topology(conn.channel())
        self.stdout.write("broker topology declared")
