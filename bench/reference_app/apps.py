from django.apps import AppConfig


class ReferenceAppConfig(AppConfig):
    name = "bench.reference_app"
    label = "bench_reference"
    verbose_name = "Benchmark reference endpoint"
