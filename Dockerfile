# syntax=docker/dockerfile:1
# Build: docker build -t swapbridge .
# Run:   docker run -p 1883:1883 -p 8000:8000 -v swapd-data:/data swapbridge
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/swapd ./cmd/swapd \
 && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/swapctl ./cmd/swapctl \
 && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/stationagent ./cmd/stationagent \
 && mkdir -p -m 0700 /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/swapd /out/swapctl /out/stationagent /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV SWAPD_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 1883 8000
ENTRYPOINT ["/usr/local/bin/swapd"]
