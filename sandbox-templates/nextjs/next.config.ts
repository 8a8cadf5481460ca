import type { NextConfig } from "next";

// The dev server runs inside a sandbox and is reached through a proxy: a 127.0.0.1 port
// on the host (local backend) or an E2B host such as 3000-<id>.e2b.app. Next.js refuses
// dev assets and the hot-reload websocket to origins not listed here.
const nextConfig: NextConfig = {
  allowedDevOrigins: [
    "127.0.0.1",
    "localhost",
    "*.localhost",
    "*.e2b.app",
    "*.e2b.dev",
  ],
  devIndicators: false,
};

export default nextConfig;
