# syntax=docker/dockerfile:1
#
# candlelight for the CPU (no CUDA): the same binary as Dockerfile.cuda without the `cuda`
# feature, on Debian slim. For hosts without an NVIDIA GPU (deploy/base runs it as is).
#
#   docker build -t candlelight:0.1.0 .
#   docker run -p 11434:11434 -v candlelight-models:/models candlelight:0.1.0
#
# CPU flags: candle selects its SIMD kernels at compile time (cfg target_feature), so the
# target CPU decides speed. Default x86-64-v2 runs on any x86-64 host since ~2009;
# --build-arg TARGET_CPU=x86-64-v3 (AVX2/FMA, Haswell / Zen and newer, what
# .cargo/config.toml uses for local builds) is much faster where every host has it.
# The model is not in the image: mount a volume at /models (see deploy/README.md).

ARG RUST_VERSION=1.95.0

# Builder and runtime on the same Debian release (the binary links against its glibc).
FROM rust:${RUST_VERSION}-bookworm AS builder
ARG TARGET_CPU=x86-64-v2
ENV RUSTFLAGS="-C target-cpu=${TARGET_CPU}"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
# include_str! compiles the model manifests into the binary.
COPY models/*.toml models/
COPY src src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin candlelight \
    && install -D -m 0755 target/release/candlelight /out/candlelight

FROM debian:bookworm-slim
# curl only for the HEALTHCHECK (Kubernetes uses its own probes on the same path).
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 candlelight \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/candlelight --create-home \
       --shell /usr/sbin/nologin candlelight \
    && mkdir -p /models/cache \
    && chown -R 10001:10001 /models
COPY --from=builder /out/candlelight /usr/local/bin/candlelight
ENV OLLAMA_HOST=0.0.0.0:11434 \
    CANDLELIGHT_MODELS_DIR=/models \
    CANDLELIGHT_DATA_DIR=/models/data \
    CANDLELIGHT_DEVICE=cpu
VOLUME ["/models"]
USER 10001:10001
WORKDIR /home/candlelight
EXPOSE 11434
HEALTHCHECK --interval=30s --timeout=5s --start-period=5m --retries=3 \
    CMD curl -fsS http://127.0.0.1:11434/ >/dev/null || exit 1
ENTRYPOINT ["candlelight"]
CMD ["serve"]
