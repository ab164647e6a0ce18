# syntax=docker/dockerfile:1
# tierguard-enforcer: build from the repository root
#   docker build -f deploy/docker/enforcer.Dockerfile -t tierguard-enforcer:dev .
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tierguard-enforcer \
    && install -D -m 0755 target/release/tierguard-enforcer /out/tierguard-enforcer

# iptables (both the nft and the legacy backend: the agent uses the one the
# node uses, --iptables-backend auto) and ipset. Runs as root with NET_ADMIN
# and NET_RAW only (see deploy/base/enforcer/daemonset.yaml).
FROM ${RUNTIME_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables ipset \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/tierguard-enforcer /usr/local/bin/tierguard-enforcer
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/tierguard-enforcer"]
CMD ["run"]
