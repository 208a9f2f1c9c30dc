"""docker-compose.yml cannot run here; these read it for what must hold."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def compose_services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_web_serves_the_certificates_the_worker_writes():
    """Separate containers: the PDFs must live on a volume both mount at MEDIA_ROOT."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "PETSTORE_VAR_DIR=/app/var" in dockerfile  # MEDIA_ROOT is $PETSTORE_VAR_DIR/media
    services = compose_services()
    mounts = [set(services[name].get("volumes") or []) for name in ("web", "worker")]
    shared = [m for m in mounts[0] & mounts[1] if m.endswith(":/app/var/media")]
    assert shared, mounts


def test_compose_runs_the_procfiles_processes():
    procfile = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()
    )
    services = compose_services()
    for name in procfile:
        assert name in services, name


def test_procfile_web_listens_on_port_default_8000():
    procfile = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()
    )
    assert "--bind 0.0.0.0:${PORT:-8000}" in procfile["web"]
    assert set(procfile) >= {"web", "worker", "relay"}
