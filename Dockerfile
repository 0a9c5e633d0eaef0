# syntax=docker/dockerfile:1
# converge: one static binary; the role is the first argument
# (order, inventory, gateway, lb, broker, setup).
#
#   docker build -t converge:local .
#   docker run --rm converge:local help

FROM golang:1.26 AS build
WORKDIR /src
COPY . .
# The caches keep modules and compiled packages between builds (BuildKit);
# only the modules the binary imports are downloaded, not the test-only ones.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/converge ./cmd/converge \
 && mkdir -p /out/data

# distroless static: CA certificates, tzdata, /etc/passwd with nonroot
# (65532), no shell. The user is numeric so that Kubernetes can check
# runAsNonRoot.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/converge /converge
# The broker's store; a volume mounted here starts owned by nonroot.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
# lb 8080, order 8081, inventory 8082, gateway 8090, broker clients 4222
# and cluster routes 6222. Every role listens on 127.0.0.1 by default: set
# CONVERGE_ADDR (or --host for the broker) to 0.0.0.0:<port> in a container.
EXPOSE 8080 8081 8082 8090 4222 6222
ENTRYPOINT ["/converge"]
CMD ["help"]
