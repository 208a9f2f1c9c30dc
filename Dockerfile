FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PETSTORE_VAR_DIR=/app/var
WORKDIR /app
# DejaVu for certificates whose names need more than Western European letters.
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY petstore ./petstore
COPY adoptions ./adoptions
COPY events ./events
COPY notifications ./notifications
COPY readmodels ./readmodels
RUN pip install --no-cache-dir .
COPY . .
RUN DJANGO_SETTINGS_MODULE=petstore.settings.local python manage.py collectstatic --noinput
EXPOSE 8000
