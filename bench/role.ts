import { type RoleModule, serveRole } from "./lib/rpc.ts";

/**
 * Entry of every role process: `node bench/role.ts <module>.<export>`, driven by bench/main.ts over
 * IPC. Only the modules listed here can be loaded, so a role never drags in another system's client.
 */
const modules: Record<string, () => Promise<Record<string, unknown>>> = {
  jetstream: () => import("./roles/jetstream.ts"),
  bullmq: () => import("./roles/bullmq.ts"),
  sluice: () => import("./roles/sluice.ts"),
};

await serveRole(async (role) => {
  const [file = "", name = ""] = role.split(".");
  const load = modules[file];
  if (!load) throw new Error(`unknown role module ${file}`);
  const mod = (await load())[name] as RoleModule | undefined;
  if (!mod || typeof mod.create !== "function") throw new Error(`unknown role ${role}`);
  return mod;
});
