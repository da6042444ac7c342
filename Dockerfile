# stn_lab in a container: `docker build -t stn_lab .` then
# `docker run --rm -v "$PWD/data:/app/data" -v "$PWD/logs:/app/logs" stn_lab model=stn data=...`
# The install is `make install`, the same commands as a local set-up.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md Makefile ./
COPY src ./src
COPY conf ./conf
RUN make install
# Data in the mounted /app/data (it would otherwise go to the container's ~/.cache/stn_lab).
ENV STN_LAB_DATA=/app/data
ENTRYPOINT [".venv/bin/python", "-m", "stn_lab.train"]
