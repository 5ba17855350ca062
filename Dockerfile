# byok-operator image for users with Docker:  docker build -t byok-operator:dev .
# It holds byok-operator and byok-judge (judge pods). The mock provider is a test double (cargo
# feature `mock`) and is not shipped.
#
# Kept in step with `hack/image.sh operator`, which builds the same image without Docker (buildah)
# as localhost/byok/byok-operator:dev from the host's target/release. Mapping:
#   build stage: cargo build --release     <->  the host's `cargo build --release --bins`
#   strip --strip-debug                    <->  the same, on copies of the binaries
#   distroless cc-debian12:nonroot         <->  the shared libraries `ldd` lists (glibc 2.36 and libgcc_s of
#     (glibc, libgcc_s, CA certificates,         the Debian 12 host: the same as distroless cc-debian12), /etc/passwd
#      nonroot = 65532, no shell)                and /etc/group with nonroot 65532, /etc/nsswitch.conf, the host's
#                                                 CA bundle, /tmp 1777, /home/nonroot; no shell
#   /usr/local/bin/<binaries>, USER 65532:65532, WORKDIR /home/nonroot, ENV PATH and SSL_CERT_FILE,
#   ENTRYPOINT byok-operator                <->  the same `buildah config`
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY tests tests
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && for b in byok-operator byok-judge; do strip --strip-debug -o /out/$b target/release/$b; done

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/byok-operator /out/byok-judge /usr/local/bin/
ENV PATH=/usr/local/bin:/usr/bin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /home/nonroot
ENTRYPOINT ["/usr/local/bin/byok-operator"]
