# syntax=docker/dockerfile:1
# A team's image without a fork: hello-grpc-service's image (HELLO_IMAGE) with the team's wheel added,
# serving HELLO_APP. The build context is a folder with the team's wheel and the wheels of any
# dependencies the stack does not already have (pip wheel --no-deps -w dist .). `make team-image`
# builds it with podman; by hand, from this repository's root:
#   docker build -f deploy/team.Dockerfile --build-arg HELLO_IMAGE=hello-grpc-service:dev \
#       --build-arg HELLO_APP=orders.app:register -t orders:dev ../orders/dist
# BASE must be the base HELLO_IMAGE was built on: the virtualenv's python is the base's.
# checkov:skip=CKV_DOCKER_7:FROM names the BASE and HELLO_IMAGE arguments; BASE's default is pinned by tag and digest (tests/test_deploy.py checks it)
# checkov:skip=CKV_DOCKER_2:the HEALTHCHECK is HELLO_IMAGE's, inherited with the rest of its configuration
ARG BASE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b
ARG HELLO_IMAGE=hello-grpc-service:dev

FROM ${HELLO_IMAGE} AS hello

FROM ${BASE} AS build
ARG HELLO_APP
# The team's wheels only, from the build context: no index, no network.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels
COPY --from=hello /opt/hello /opt/hello
COPY *.whl /wheels/
# Into the stack's virtualenv, whose packages satisfy the wheels' dependencies on it, but written
# under /added, so that the final stage adds only the team's files. Then the app is loaded once:
# a wrong HELLO_APP or a module missing from the wheel fails the build, not the pod.
RUN test -n "$HELLO_APP" || { echo "pass --build-arg HELLO_APP=package.module:attribute" >&2; exit 1; } \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip --python /opt/hello/bin/python install --root /added /wheels/*.whl \
    && /opt/hello/bin/python -c "import glob, sys; sys.path[:0] = glob.glob('/added/opt/hello/lib/python3*/site-packages'); from service.server.app import load_app; load_app(sys.argv[1])" "$HELLO_APP"

FROM ${HELLO_IMAGE}
ARG HELLO_APP
COPY --from=build /added/ /
ENV HELLO_APP=${HELLO_APP}
USER 10001:10001
