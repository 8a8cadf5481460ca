import type { NextConfig } from "next";

// The dev server runs inside a sandbox and is reached through a proxy: a 127.0.0.1 port
// on the host (local backend), an E2B host such as 3000-<id>.e2b.app, or the preview gateway
// (<project>.preview.localhost; "*.localhost" matches one label only). Next.js refuses dev
// assets and the hot-reload websocket to origins not listed here. The gateway also presents
// "localhost" for its own preview's dev requests, so QAI_PREVIEW_URL's domain needs no entry.
const nextConfig: NextConfig = {
  allowedDevOrigins: [
    "127.0.0.1",
    "localhost",
    "*.localhost",
    "*.preview.localhost",
    "*.e2b.app",
    "*.e2b.dev",
  ],
  devIndicators: false,
};

export default nextConfig;
