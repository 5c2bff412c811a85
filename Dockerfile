# Build stage: compile the release binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY config config
COPY migrations migrations
RUN cargo build --release --locked --bin moka-ingest

# Runtime stage: just the binary (config/default.toml is embedded in it) and CA certificates
# for HTTPS attachment downloads.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/moka-ingest moka \
    && mkdir -p /var/lib/moka-ingest/attachments && chown -R moka /var/lib/moka-ingest
COPY --from=build /src/target/release/moka-ingest /usr/local/bin/moka-ingest
COPY config /etc/moka-ingest
USER moka
WORKDIR /var/lib/moka-ingest
ENTRYPOINT ["moka-ingest"]
CMD ["all"]
