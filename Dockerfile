# Builds the rowcast relay.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY devkit ./devkit
COPY bench ./bench
COPY migrations ./migrations
COPY sql ./sql
COPY routes.toml ./
RUN cargo build --release --locked --bin rowcast

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home rowcast
COPY --from=build /src/target/release/rowcast /usr/local/bin/rowcast
COPY routes.toml /etc/rowcast/routes.toml
USER rowcast
ENV SOCKET_PORT=3001 ROWCAST_ROUTES=/etc/rowcast/routes.toml
EXPOSE 3001
ENTRYPOINT ["rowcast"]
CMD ["serve"]
