# Ferry's image: its binaries on a minimal base (glibc and libgcc only, no shell).
#   docker build -t ferry:dev .
# The node agent runs transfers as child processes of its own binary, so all the binaries
# sit in one image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ferry-node-agent -p ferry-coordinator \
 && mkdir /out \
 && cp target/release/ferry-node-agent target/release/ferry-restore-helper \
       target/release/ferry-coordinator target/release/ferry target/release/kubectl-ferry /out/ \
 && strip /out/*

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
# The restore helper and the coordinator run as the image's non-root user; the node agent's
# DaemonSet runs it as root, since it reads and writes every pod's files.
ENTRYPOINT ["/usr/local/bin/ferry-node-agent"]
