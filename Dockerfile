# syntax=docker/dockerfile:1
#
# Skein in a container (docs/scaling.md, "Running in containers"):
#
#   docker build -t skein .
#   docker run -p 4317:4317 -p 4318:4318 -p 16686:16686 -p 9411:9411 -v skein-data:/data skein
#
# The same image runs every role: `docker run skein serve --role ingest ...`.
# deploy/validate.py (run by scripts/test.sh) lints this file with hadolint and
# checks the stages, the user and the paths below.

# Builder: the official Rust image. Its Rust must be at least the workspace's
# `rust-version` and what every locked dependency needs (validate.py checks
# both; ordered-float wants 1.90); 1.95 is the toolchain the tests run on.
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the crates.io downloads and the compiled dependencies
# between builds (BuildKit), so a source change rebuilds only Skein's crates;
# the binary is copied out of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin skein \
    && install -D -m 0755 target/release/skein /out/skein

# Runtime: Debian slim, the same Debian release as the builder (glibc).
FROM debian:bookworm-slim
# ca-certificates: S3 over https verifies the endpoint's certificate against
# the system's CA store (rustls-platform-verifier reads it). The fixed UID/GID
# 10001 is what the Kubernetes manifests' securityContext names. Not pinned
# to a version (hadolint DL3008): Debian replaces a package's version with
# each security update, and a pinned one would stop building.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 skein \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin skein \
    && mkdir -p /data \
    && chown 10001:10001 /data
COPY --from=builder /out/skein /usr/local/bin/skein

# Every listener on every interface (":PORT" is [::] on a dual-stack host,
# 0.0.0.0 where IPv6 is off): Skein's defaults are loopback only, which a
# container cannot be reached on. As environment rather than flags, so a
# `command:` that names a role keeps them.
ENV SKEIN_DATA_DIR=/data \
    SKEIN_OTLP_GRPC_ADDR=:4317 \
    SKEIN_OTLP_HTTP_ADDR=:4318 \
    SKEIN_HTTP_ADDR=:16686 \
    SKEIN_ZIPKIN_ADDR=:9411

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# OTLP/gRPC, OTLP/HTTP, the API and UI, Zipkin v2.
EXPOSE 4317 4318 16686 9411

# Ready once WAL replay is done. The slim base has no curl; bash's /dev/tcp
# sends the request. Plain HTTP only: with --tls-cert, override or disable it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["bash", "-c", "port=\"${SKEIN_HTTP_ADDR##*:}\"; exec 3<>\"/dev/tcp/127.0.0.1/${port:-16686}\" && printf 'GET /readyz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

# SIGTERM drains, flushes the head to a segment and exits 0: give it time
# (docker stop -t 60, compose stop_grace_period, Kubernetes
# terminationGracePeriodSeconds).
ENTRYPOINT ["skein"]
CMD ["serve"]
