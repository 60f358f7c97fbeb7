# The framegate binary (all roles). Build: docker build -t framegate .
#
# Three stages: cargo-chef plans the dependency graph from the manifests and the lockfile and
# builds the dependencies in their own layer, so a change to our code rebuilds only our
# crates (librdkafka and the AWS SDK take most of a clean build); then the binary; then a
# slim runtime with what the roles call at run time (ffmpeg for the simulator and
# post-processing, fonts for the simulator's captions, CA certificates for providers).
# Checked in CI by scripts/check-dockerfile.py and hadolint (.ci/run).

FROM rust:1.95-bookworm AS chef
# librdkafka is built from source by rdkafka-sys: make, gcc, libssl-dev and pkg-config are in
# this image.
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
COPY rust-toolchain.toml Cargo.toml Cargo.lock ./
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin framegate
COPY . .
RUN cargo build --release --locked --bin framegate

FROM debian:bookworm-slim AS runtime
# Debian's own versions of the day: pinning each package would break the build at every
# point release (hadolint DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 ffmpeg fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 framegate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/framegate --no-create-home framegate \
 && mkdir -p /var/lib/framegate/blobs \
 && chown -R 10001:10001 /var/lib/framegate
COPY --from=build /src/target/release/framegate /usr/local/bin/framegate
# Owned by the user, so a fresh named volume mounted here is writable by it.
WORKDIR /var/lib/framegate
# Numeric, so the host and orchestrators can tell it is not root without the image's passwd.
USER 10001:10001
# The API answers on FRAMEGATE_HTTP_ADDR; other roles point the probe elsewhere
# (FRAMEGATE_HEALTHCHECK_ADDR) or disable it (docker-compose.yml).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["framegate", "healthcheck"]
ENTRYPOINT ["framegate"]
