# The framegate binary (all roles). Build: docker build -t framegate .
FROM rust:1.95-bookworm AS build
# librdkafka is built from source by rdkafka-sys: make, gcc, libssl-dev and pkg-config are in
# this image.
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin framegate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 ffmpeg fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/framegate framegate
COPY --from=build /src/target/release/framegate /usr/local/bin/framegate
USER framegate
ENTRYPOINT ["framegate"]
