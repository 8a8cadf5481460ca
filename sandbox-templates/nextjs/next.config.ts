import type { NextConfig } from "next";

// Publishing builds with QAI_NEXT_OUTPUT=export (a static export, served from storage) and,
// when the app needs a server, QAI_NEXT_OUTPUT=standalone. The dev server leaves it unset.
const output = process.env.QAI_NEXT_OUTPUT as NextConfig["output"] | undefined;

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
  output,
  images: output === "export" ? { unoptimized: true } : undefined,
  productionBrowserSourceMaps: false,
};

export default nextConfig;
