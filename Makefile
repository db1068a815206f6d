# One entry point for people and CI. Every target installs what it needs first,
# so a fresh clone needs only python3 (>= 3.11) and network access to PyPI.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ENV_FILE ?= config/dev.env
# Extra DNS names/IPs for the dev server certificate: make certs SANS="a.example,b.example"
SANS ?=
# FORCE=1 replaces existing certificates; y, yes, true and on (any case) mean the same, 0, n, no, false
# and off (or nothing) keep them; anything else is an error rather than a silent "no".
FORCE ?=
FORCE_WORD := $(shell echo '$(FORCE)' | tr '[:upper:]' '[:lower:]')
FORCE_FLAG := $(if $(filter 1 y yes true on,$(FORCE_WORD)),--force)
PROTOS := $(shell find protos -name '*.proto')
GENERATED := service/generated/rpc_package/helloworld_pb2.py
# make proto PROTO_DIR=../orders/protos PROTO_OUT=../orders/orders/generated: a team's protos into its own
# package (only generated files are written or removed there).
PROTO_DIR ?= protos
PROTO_OUT ?= service/generated
LOCK_FLAGS := --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links
# Renovate (renovate.json) refreshes each lock by re-running the command in its header, and refuses
# --no-emit-find-links; the header names the command without it, which writes the same file on a
# machine whose pip has no find-links (--no-emit-find-links keeps this machine's out of the lock).
HEADER_FLAGS := --allow-unsafe --generate-hashes --no-emit-index-url --strip-extras
# $(call compile,OUTPUT,SOURCE[,EXTRA FLAGS])
compile = CUSTOM_COMPILE_COMMAND="pip-compile $(HEADER_FLAGS)$(if $(3), $(3)) --output-file=$(1) $(2)" \
	$(BIN)/pip-compile $(LOCK_FLAGS) $(3) -o $(1) $(2)

BUF := tools/node_modules/.bin/buf
DEPLOY_VENV := .venv-deploy

# Programs the tests drive, as command:Debian-package; installed with apt-get where missing.
SYSTEM_TOOLS := kubectl:kubectl prometheus:prometheus promtool:prometheus h2load:nghttp2-client nghttp:nghttp2-client \
	openssl:openssl taskset:util-linux valgrind:valgrind callgrind_control:valgrind \
	podman:podman runc:runc mmdebstrap:mmdebstrap chromium:chromium curl:curl

# The container image (make image; tests/test_image.py runs it as deploy/k8s would). No image can be
# pulled here, so its base is a Debian bookworm root file system that deploy/podman/debian-base.sh
# makes from Debian's packages, imported into podman's store under a tag naming that script's hash:
# the base is made again when its recipe changes, and when it is BASE_MAX_AGE_DAYS old, since it
# holds Debian's security updates only as of the day it was made. podman reads our containers.conf.
IMAGE ?= localhost/hello-grpc-service:dev
PODMAN := CONTAINERS_CONF=$(CURDIR)/deploy/podman/containers.conf podman
BASE_RECIPE := deploy/podman/debian-base.sh
BASE_MAX_AGE_DAYS := 7
BASE_IMAGE := localhost/hello-debian-base:bookworm-$(shell sha256sum $(BASE_RECIPE) | cut -c1-12)
WHEELHOUSE := build/wheelhouse
# The wheels for the image's Python (CPython 3.11 on glibc, both bases), whatever Python runs make.
ARCH := $(shell uname -m)
WHEEL_TARGET := --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
	--platform manylinux2014_$(ARCH) $(foreach v,17 24 27 28 31 34 35 36,--platform manylinux_2_$(v)_$(ARCH))

.PHONY: help bench bench-edge venv system-tools tools deploy-tools deploy-check k8s-secrets wheelhouse base-image image team-image proto certs run run-edge test lint fmt lock wheel clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# The stamp is rebuilt whenever the lock or the project metadata changes.
$(BIN)/.installed: requirements-dev.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

venv: $(BIN)/.installed ## Create .venv and install the locked dependencies and the project

# Command-line tools from npm that the tests drive (buf; the CRD schemas of tools/validate-crds.mjs; the
# browser test's puppeteer-core, connect-web, protoc-gen-es and esbuild), pinned by tools/package-lock.json.
# puppeteer-core downloads no browser; PUPPETEER_SKIP_DOWNLOAD says so to anything that would.
$(BUF): tools/package.json tools/package-lock.json
	PUPPETEER_SKIP_DOWNLOAD=1 npm ci --prefix tools --no-audit --no-fund --loglevel=error
	@touch $@

tools: $(BUF) ## Install the npm tools the tests use (buf, the browser test's)

system-tools: ## Install the Debian packages the tests drive (needs root where any is missing)
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	    command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

# checkov, kubernetes-validate and hadolint in a virtualenv of their own; kubectl (with kustomize 5)
# comes with these machines (system-tools installs it where it is missing).
$(DEPLOY_VENV)/.installed: requirements-deploy.lock
	@test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-deploy.lock
	@touch $@

deploy-tools: $(DEPLOY_VENV)/.installed ## Install the manifest and Dockerfile checkers

deploy-check: system-tools $(DEPLOY_VENV)/.installed $(BIN)/.installed $(BUF) ## Render every overlay; validate (cert-manager's CRD too), checkov and hadolint them
	$(BIN)/pytest -q tests/test_deploy.py

# Namespace and Secrets for deploy/k8s from certs/ (make certs SANS=... first); prints the commands' result.
k8s-secrets: ## Create the hello-tls and hello-tokens Secrets from certs/ in the current kubectl context
	kubectl create namespace hello --dry-run=client -o yaml | kubectl apply -f -
	kubectl -n hello create secret generic hello-tls --type=kubernetes.io/tls \
	    --from-file=tls.crt=certs/server.pem --from-file=tls.key=certs/server-key.pem \
	    --from-file=ca.crt=certs/ca.pem --dry-run=client -o yaml | kubectl apply -f -
	kubectl -n hello create secret generic hello-tokens --from-file=tokens=certs/token \
	    --dry-run=client -o yaml | kubectl apply -f -

# Every wheel the image installs, from the hash-locked requirements, so its build needs no network.
$(WHEELHOUSE).stamp: requirements-tracing.lock requirements-build.lock | $(BIN)/.installed
	rm -rf $(WHEELHOUSE)
	$(BIN)/python -m pip download --quiet --disable-pip-version-check --require-hashes --no-deps $(WHEEL_TARGET) \
	    -d $(WHEELHOUSE) -r requirements-tracing.lock -r requirements-build.lock
	@touch $@

wheelhouse: $(WHEELHOUSE).stamp ## Download the wheels deploy/Dockerfile installs into build/wheelhouse

# Built without network (--network=none proves the build hermetic) in the docker format, which keeps
# the HEALTHCHECK. The image this tag named before is removed once no tag names it (podman refuses
# if a container uses it), so repeated builds do not fill the store.
# The base it replaces goes, with the untagged images built on it (the build stage's cache, which no
# build uses again): the images whose first layer is its layer. A tagged image built on it keeps its
# layers until it is replaced in turn.
base-image: system-tools ## Make the Debian base of make image when it is missing or BASE_MAX_AGE_DAYS (7) old (root)
	@set -o pipefail; made=$$($(PODMAN) image inspect --format '{{.Created.Unix}}' $(BASE_IMAGE) 2>/dev/null || echo 0); \
	if [ $$(( $$(date +%s) - made )) -ge $$(( $(BASE_MAX_AGE_DAYS) * 86400 )) ]; then \
	    old=$$($(PODMAN) image inspect --format '{{index .RootFS.Layers 0}}' $(BASE_IMAGE) 2>/dev/null); \
	    echo "making $(BASE_IMAGE)"; $(BASE_RECIPE) | $(PODMAN) import --quiet - $(BASE_IMAGE) || exit 1; \
	    [ -z "$$old" ] || gone=$$($(PODMAN) image inspect --format '{{.Id}} {{index .RootFS.Layers 0}} {{len .RepoTags}}' \
	        $$($(PODMAN) images --all --quiet) | awk -v old="$$old" '$$2 == old && $$3 == 0 {print $$1}'); \
	    [ -z "$$gone" ] || $(PODMAN) rmi --ignore $$gone >/dev/null 2>&1 || true; fi

image: system-tools $(WHEELHOUSE).stamp base-image ## Build the image (IMAGE=localhost/hello-grpc-service:dev) with podman on a Debian base made here (root)
	@old=$$($(PODMAN) image inspect --format '{{.Id}}' $(IMAGE) 2>/dev/null); \
	$(PODMAN) build --format docker --network=none --build-arg BASE=$(BASE_IMAGE) -f deploy/Dockerfile -t $(IMAGE) . \
	&& new=$$($(PODMAN) image inspect --format '{{.Id}}' $(IMAGE)) \
	&& if [ -n "$$old" ] && [ "$$old" != "$$new" ] \
	    && [ "$$($(PODMAN) image inspect --format '{{len .RepoTags}}' "$$old")" = 0 ]; then \
	    $(PODMAN) rmi "$$old" >/dev/null 2>&1 || echo "kept the previous $(IMAGE) ($$old): in use"; fi

# A team's image on ours (deploy/team.Dockerfile): WHEELS is the folder of the team's wheel (and of
# any dependency the stack lacks), APP what it serves (HELLO_APP). Built without network, as ours.
WHEELS ?= dist
APP ?=
TEAM_IMAGE ?= localhost/hello-team:dev

team-image: image ## Build a team's image on ours: WHEELS=folder of its wheels, APP=package.module:attribute (TEAM_IMAGE=name)
	@test -n "$(APP)" || { echo "make team-image: APP=package.module:attribute is required" >&2; exit 2; }
	$(PODMAN) build --format docker --network=none --build-arg BASE=$(BASE_IMAGE) --build-arg HELLO_IMAGE=$(IMAGE) \
	    --build-arg HELLO_APP=$(APP) -f deploy/team.Dockerfile -t $(TEAM_IMAGE) $(WHEELS)

$(GENERATED): $(PROTOS) scripts/gen_protos.py | $(BIN)/.installed
	$(BIN)/python scripts/gen_protos.py

proto: $(BIN)/.installed ## Regenerate service/generated/ from protos/ (PROTO_DIR=, PROTO_OUT=: a team's, into its package)
	$(BIN)/python scripts/gen_protos.py --protos $(PROTO_DIR) --out $(PROTO_OUT)

certs: $(BIN)/.installed ## Write dev CA, server/client certs and a token into certs/ (FORCE=1 to replace, SANS=...)
	@case '$(FORCE_WORD)' in ''|0|n|no|false|off|1|y|yes|true|on) ;; \
	    *) echo "make certs: FORCE=$(FORCE) is not understood: FORCE=1 replaces the certificates" >&2; exit 2;; esac
	$(BIN)/hello-certs --dir certs $(if $(SANS),--san "$(SANS)") $(FORCE_FLAG)

# The server's log lines alone go to stdout (make run | jq): what the preparation prints, make's own
# lines included, goes to stderr. exec hands the process over, so signals reach the server directly.
run: ## Serve on localhost:50051 with TLS and the dev token (config/dev.env)
	@$(MAKE) --no-print-directory $(GENERATED) certs >&2
	@exec $(BIN)/hello-server --env-file $(ENV_FILE)

# The same server, with Envoy in front (hello-edge run): stdout is still the server's log lines alone;
# the edge's own lines and Envoy's go to stderr. One Ctrl-C or SIGTERM stops both.
run-edge: ## make run with Envoy in front: JSON and gRPC-Web on http://localhost:8080 (HELLO_EDGE__* in config/dev.env)
	@$(MAKE) --no-print-directory $(GENERATED) certs >&2
	@exec $(BIN)/hello-edge --env-file $(ENV_FILE) run

test: system-tools $(GENERATED) $(BUF) $(DEPLOY_VENV)/.installed lint ## Install everything the tests need, lint, then run the tests
	$(BIN)/pytest

lint: $(BIN)/.installed $(BUF) ## ruff, mypy and buf lint
	$(BUF) lint
	$(BIN)/ruff check service tests scripts
	$(BIN)/ruff format --check service tests scripts
	$(BIN)/mypy

fmt: $(BIN)/.installed ## Format and auto-fix with ruff
	$(BIN)/ruff format service tests scripts
	$(BIN)/ruff check --fix service tests scripts

lock: $(BIN)/.installed ## Re-resolve requirements*.lock from pyproject.toml
	$(call compile,requirements.lock,pyproject.toml)
	$(call compile,requirements-tracing.lock,pyproject.toml,--extra=tracing)
	$(call compile,requirements-dev.lock,pyproject.toml,--extra=dev --extra=tracing --extra=edge)
	$(call compile,requirements-build.lock,requirements-build.in)
	$(call compile,requirements-deploy.lock,requirements-deploy.in)

bench: system-tools $(GENERATED) ## Benchmark ours against a bare aio server and the seed's (QUICK=1: under a minute; INSTRUCTIONS=0: no callgrind guard; GRPCIO=a,b: on those grpcio releases)
	$(BIN)/python -m tests.bench.bench $(if $(filter 1 yes true,$(QUICK)),--quick) $(if $(GRPCIO),--grpcio $(GRPCIO)) \
		$(if $(filter 0 no false,$(INSTRUCTIONS)),--instruction-calls 0)

bench-edge: system-tools $(GENERATED) ## What the edge adds per call: h2load at the server alone and through Envoy (gRPC-Web, JSON); about two minutes
	$(BIN)/python -m tests.bench.edge

wheel: $(BIN)/.installed ## Build the wheel into dist/
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation -w dist .

clean: ## Remove the virtualenv, build output and caches (keeps certs/)
	rm -rf $(VENV) $(DEPLOY_VENV) tools/node_modules dist build .pytest_cache .mypy_cache .ruff_cache
