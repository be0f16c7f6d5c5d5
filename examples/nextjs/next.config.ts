import type { NextConfig } from "next";

const config: NextConfig = {
  reactStrictMode: true,
  poweredByHeader: false,
  // `next dev` writes no files of its own into the project.
  agentRules: false,
  experimental: { agentUpgrade: false },
};

export default config;
