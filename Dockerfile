# dps-allocator: build with the Rust toolchain, run from a minimal base as a non-root user.
#
#   docker build -t dps-allocator .
#   docker run -p 8080:8080 -e DPS_ALLOCATOR_API_KEY=change-me dps-allocator
#   docker run ... -v "$PWD/my-policies:/etc/dps-allocator/policies:ro" \
#                  -v /var/lib/GeoIP:/var/lib/GeoIP:ro -e DPS_ALLOCATOR_GEOIP=/var/lib/GeoIP/GeoLite2-City.mmdb ...

FROM rust:1-bookworm AS build
WORKDIR /src
# The dependencies in a layer of their own: built from the manifests and stub sources, so a change to the
# sources rebuilds only this crate (seconds) and a change to Cargo.lock rebuilds the dependencies. The
# stub's own artifacts are removed, so the real sources are always compiled after it.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo "fn main() {}" > src/main.rs \
    && touch src/lib.rs \
    && echo "fn main() {}" > benches/decision.rs \
    && cargo build --release --locked --bin dps-allocator \
    && rm -rf src benches target/release/dps-allocator* target/release/deps/dps_allocator-* \
              target/release/deps/libdps_allocator-* target/release/.fingerprint/dps-allocator-*
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin dps-allocator \
    && strip target/release/dps-allocator
# The whole policy directory (subdirectories such as fences/ included; tests/ is left out by
# .dockerignore), checked with the binary just built: an image whose policy does not load is never built.
COPY policies ./policies
RUN target/release/dps-allocator check policies

# distroless/cc: glibc and libgcc, no shell, no package manager; :nonroot runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/dps-allocator /usr/local/bin/dps-allocator
# The shipped example policy; mount your own directory over it (a ConfigMap on Kubernetes).
COPY --from=build /src/policies /etc/dps-allocator/policies
ENV DPS_ALLOCATOR_LISTEN=0.0.0.0:8080 \
    DPS_ALLOCATOR_POLICIES=/etc/dps-allocator/policies \
    DPS_ALLOCATOR_LOG_FORMAT=json
USER 65532:65532
EXPOSE 8080
# No shell in the image: the binary checks itself. HEALTHCHECK is part of Docker's image format only:
# buildah and podman keep it with `--format docker` (their default OCI format drops it).
HEALTHCHECK --interval=15s --timeout=4s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/dps-allocator", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/dps-allocator"]
CMD ["serve"]
