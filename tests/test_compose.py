"""docker-compose.yml cannot run here; these read it (and the Procfile) for what must hold."""

import re
import shlex
from pathlib import Path

import yaml
from django.conf import settings
from honcho.environ import parse_procfile

from tests.test_celery_worker import queues_consumed

ROOT = Path(__file__).resolve().parent.parent
DEFAULTED = re.compile(r"\$\{\w+:-([^}]*)\}")  # ${PORT:-8000}


def procfile() -> dict[str, str]:
    """Return the Procfile's commands by process name, as honcho (make run) reads them."""
    return dict(parse_procfile((ROOT / "Procfile").read_text()).processes)


def compose_services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def argv(command: str | list[str]) -> list[str]:
    """Split a command as a shell would, each `${NAME:-default}` taken at its default."""
    args = command if isinstance(command, list) else shlex.split(command)
    return [DEFAULTED.sub(r"\1", arg) for arg in args]


def worker_options(process: str) -> list[str]:
    """The options after `celery -A petstore worker` on the Procfile's line for `process`."""
    command = argv(procfile()[process])
    assert command[:4] == ["celery", "-A", "petstore", "worker"], command
    return command[4:]


def test_web_serves_the_certificates_the_workers_write():
    """Separate containers: the PDFs must live on a volume web and every worker mount at MEDIA_ROOT."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "PETSTORE_VAR_DIR=/app/var" in dockerfile  # MEDIA_ROOT is $PETSTORE_VAR_DIR/media
    services = compose_services()
    workers = [name for name in services if argv(services[name].get("command", ""))[:1] == ["celery"]]
    assert set(workers) == {"worker", "certificates"}
    for name in workers:
        mounts = set(services["web"].get("volumes") or []) & set(services[name].get("volumes") or [])
        assert [m for m in mounts if m.endswith(":/app/var/media")], (name, mounts)


def test_compose_runs_each_procfile_process_with_its_command():
    services = compose_services()
    app_services = {name for name, service in services.items() if service.get("image") == "petstore-events"}

    assert app_services - {"migrate"} == set(procfile())  # migrate runs once before the rest
    for name, command in procfile().items():
        # Compose fills ${…} from the host's environment, not the container's: it spells the defaults out.
        assert argv(services[name]["command"]) == argv(command), name


def test_procfile_web_listens_on_port_default_8000():
    assert "--bind 0.0.0.0:${PORT:-8000}" in procfile()["web"]
    assert set(procfile()) >= {"web", "worker", "certificates", "relay"}


def test_procfile_workers_consume_every_queue_once_certificates_on_their_own():
    consumed = {name: queues_consumed(*worker_options(name)) for name in ("worker", "certificates")}

    assert consumed["certificates"] == ["certificates"]
    everything = [settings.CELERY_TASK_DEFAULT_QUEUE, *settings.PETSTORE_HANDLER_QUEUES]
    assert sorted(consumed["worker"] + consumed["certificates"]) == sorted(everything)


def test_procfile_certificate_worker_takes_one_message_per_pool_process():
    """Celery sets RabbitMQ's prefetch per channel: concurrency x multiplier messages in hand."""
    options = " ".join(worker_options("certificates"))

    assert "--prefetch-multiplier 1" in options


def test_procfile_workers_have_their_own_node_names_and_the_same_flags():
    options = {name: worker_options(name) for name in ("worker", "certificates")}

    assert options["worker"][:2] == ["-n", "worker@%h"]
    assert options["certificates"][:2] == ["-n", "certificates@%h"]
    shared = "--loglevel INFO --without-heartbeat --without-gossip --without-mingle"
    assert all(" ".join(found).endswith(shared) for found in options.values()), options
