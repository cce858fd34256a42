import { defineConfig } from "vite";

// Tauri serves ui/dist through its custom protocol; the dev server is for `--no-default-features`.
export default defineConfig({
  clearScreen: false,
  server: { port: 5173, strictPort: true },
  build: { target: "safari15", outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 800 },
  test: { environment: "happy-dom" },
} as any);
