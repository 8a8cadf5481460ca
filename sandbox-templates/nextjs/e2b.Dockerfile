# E2B snapshots the running sandbox after start_cmd (compile_page.sh) has compiled the first page,
# so a new sandbox resumes with a warm dev server on port 3000.
FROM node:20-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

ENV NEXT_TELEMETRY_DISABLED=1 \
    NEXT_IGNORE_INCORRECT_LOCKFILE=1

COPY compile_page.sh /compile_page.sh
RUN chmod +x /compile_page.sh

WORKDIR /home/user

# Dependencies first, so source edits reuse the npm ci layer.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

COPY . .
RUN rm -f e2b.toml e2b.Dockerfile compile_page.sh template.json .dockerignore
