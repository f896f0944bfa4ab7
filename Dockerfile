# The guard image: gateway and workers (see compose.yaml). CPU or CUDA follows the torch wheel pip
# picks for the platform; pass TORCH_SPEC to pin one.
FROM python:3.11-slim
ARG TORCH_SPEC="torch>=2.4,<2.15"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# jemalloc: workers run on it (GUARD_WORKER_ALLOCATOR=auto), on which their memory levels off under load.
RUN apt-get update && apt-get install -y --no-install-recommends libjemalloc2 && rm -rf /var/lib/apt/lists/*
RUN pip install "$TORCH_SPEC"
COPY pyproject.toml README.md ./
COPY guard ./guard
COPY workers ./workers
COPY policies ./policies
RUN pip install . && useradd --create-home guard && mkdir -p /models /data && chown guard /models /data
USER guard
EXPOSE 8000
CMD ["guard", "serve", "--host", "0.0.0.0", "--port", "8000"]
