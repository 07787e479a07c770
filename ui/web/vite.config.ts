import { defineConfig } from "vite";

// Deterministic output: fixed file names (no content hashes) so that a rebuild
// of the same source is byte-identical, and `.ci/run` can diff ui/dist.
export default defineConfig({
  base: "/",
  esbuild: { jsx: "automatic", jsxImportSource: "preact", legalComments: "none" },
  build: {
    outDir: "../dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    cssCodeSplit: false,
    modulePreload: false,
    reportCompressedSize: false,
    assetsInlineLimit: 0,
    rollupOptions: {
      output: {
        entryFileNames: "assets/index.js",
        chunkFileNames: "assets/[name].js",
        assetFileNames: (info) =>
          (info.names ?? []).some((n) => n.endsWith(".css")) ? "assets/index.css" : "assets/[name][extname]",
        inlineDynamicImports: true,
      },
    },
  },
});
