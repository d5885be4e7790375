# dps-allocator: build with the Rust toolchain, run from a minimal base as a non-root user.
#
#   docker build -t dps-allocator .
#   docker run -p 8080:8080 -e DPS_ALLOCATOR_API_KEY=change-me dps-allocator
#   docker run ... -v "$PWD/my-policies:/etc/dps-allocator/policies:ro" \
#                  -v /var/lib/GeoIP:/var/lib/GeoIP:ro -e DPS_ALLOCATOR_GEOIP=/var/lib/GeoIP/GeoLite2-City.mmdb ...

FROM rust:1-bookworm AS build
WORKDIR /src
# Manifests first, so the dependency layer is reused while only the sources change.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin dps-allocator \
    && strip target/release/dps-allocator

# distroless/cc: glibc and libgcc, no shell, no package manager; :nonroot runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/dps-allocator /usr/local/bin/dps-allocator
# The shipped example policy; mount your own directory over it (a ConfigMap on Kubernetes).
COPY policies/*.toml /etc/dps-allocator/policies/
ENV DPS_ALLOCATOR_LISTEN=0.0.0.0:8080 \
    DPS_ALLOCATOR_POLICIES=/etc/dps-allocator/policies \
    DPS_ALLOCATOR_LOG_FORMAT=json
USER 65532:65532
EXPOSE 8080
# No shell in the image: the binary checks itself.
HEALTHCHECK --interval=15s --timeout=4s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/dps-allocator", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/dps-allocator"]
CMD ["serve"]
