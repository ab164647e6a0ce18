# syntax=docker/dockerfile:1
# tierguard-webhook: build from the repository root
#   docker build -f deploy/docker/webhook.Dockerfile -t tierguard-webhook:dev .
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tierguard-webhook \
    && install -D -m 0755 target/release/tierguard-webhook /out/tierguard-webhook

# distroless cc: glibc and libgcc only, no shell; runs as uid 65532 (nonroot)
FROM ${RUNTIME_IMAGE}
COPY --from=build /out/tierguard-webhook /usr/local/bin/tierguard-webhook
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/tierguard-webhook"]
CMD ["serve", "--listen", "0.0.0.0:8443"]
