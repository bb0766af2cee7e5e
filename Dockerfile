# authgate: build with the Rust toolchain, run on a slim Debian as a non-root user.
#
#   docker build -t authgate .
#   docker run --rm -p 127.0.0.1:8080:8080 -e AUTHGATE_PUBLIC_URL=https://mcp.example.com \
#     -e DATABASE_URL=postgres://... -e AUTHGATE_UPSTREAM_ISSUER=... authgate
#
# The image listens on 0.0.0.0:8080 (AUTHGATE_LISTEN), so AUTHGATE_PUBLIC_URL is required and an
# upstream OpenID provider too (the development login only runs on a loopback public URL). Logs are
# JSON. See the README's "Deploy" section.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Only what the binary is built from (see .dockerignore): the manifest, the lock file, the sources,
# the migrations and the page templates (both compiled into the binary).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY templates ./templates
RUN cargo build --release --locked --bin authgate \
    && cp target/release/authgate /authgate

FROM debian:bookworm-slim
# ca-certificates: TLS to the upstream OpenID provider, metadata-document clients and PostgreSQL.
# curl: only for the HEALTHCHECK below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/authgate --create-home \
       --shell /usr/sbin/nologin authgate
COPY --from=build /authgate /usr/local/bin/authgate
USER authgate
# The working directory holds the SQLite file when DATABASE_URL is left at sqlite://authgate.db:
# mount a volume here for that, or use PostgreSQL.
WORKDIR /var/lib/authgate
ENV AUTHGATE_LISTEN=0.0.0.0:8080 \
    AUTHGATE_LOG_FORMAT=json
# 8080: the public listener (behind the TLS reverse proxy). 9090: Prometheus metrics, only when
# AUTHGATE_METRICS_LISTEN=0.0.0.0:9090 is set; never publish it to the internet.
EXPOSE 8080 9090
# /healthz: the process answers (no database). Change the port here if AUTHGATE_LISTEN changes.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]
# SIGTERM: stop accepting, let requests and streams finish for AUTHGATE_SHUTDOWN_TIMEOUT (30 s), exit.
# Give the container longer than that (docker stop -t 40, compose stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["authgate"]
CMD ["serve"]
