# bids-jdam BIDS-App image: CUDA PyTorch base, pinned dependencies before source, non-root user.
# Build:  docker build -t bids-jdam:latest .          (or: make test-container, which also tests the image)
# Run:    docker run --rm -u "$(id -u):$(id -g)" -v /path/to/bids:/data:ro -v /path/to/out:/out \
#           bids-jdam:latest /data /out participant     (add --gpus all for a GPU)
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

# The release (bids_jdam.__version__; a test keeps them equal).
LABEL org.opencontainers.image.title="bids-jdam" \
      org.opencontainers.image.version="0.2.0" \
      org.opencontainers.image.licenses="Apache-2.0"

# Caches and config of every library go to /tmp, so any uid (HOME=/) and a read-only root filesystem work.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    XDG_DATA_HOME=/tmp/.local/share \
    MPLCONFIGDIR=/tmp/matplotlib \
    BIDS_JDAM_CONTAINER_TYPE=docker \
    BIDS_JDAM_CONTAINER_TAG=bids-jdam:latest

WORKDIR /opt/bids-jdam

# Dependencies first (cached layer), every version pinned by containers/constraints.txt (containers/lock.sh);
# torch comes from the CUDA base image and is not reinstalled.
COPY containers/constraints.txt ./
RUN python -m pip install --no-cache-dir -r constraints.txt

# Source and the packaged demo model.
COPY setup.cfg pyproject.toml README.md ./
COPY bids_jdam/ bids_jdam/
RUN python -m pip install --no-cache-dir --no-deps . \
    && useradd --create-home --uid 1000 bidsjdam

USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["bids-jdam"]
CMD ["--help"]
