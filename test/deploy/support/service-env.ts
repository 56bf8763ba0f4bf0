import type { z } from "zod";

/** The three Sluice services, as the image's entrypoint names them. */
export const SERVICES = ["enqueue", "dispatcher", "worker"] as const;
export type ServiceName = (typeof SERVICES)[number];

/** A service's env contract: `services/<svc>/config.ts` exports `envSchema` and `loadConfig(env)`. */
export type ServiceEnv = {
  names: ReadonlySet<string>;
  loadConfig(env: Record<string, string | undefined>): unknown;
};

/** Load a service's real config module. */
export async function serviceEnv(svc: ServiceName): Promise<ServiceEnv> {
  const mod = (await import(`../../../services/${svc}/config.ts`)) as {
    envSchema: z.ZodObject;
    loadConfig(env: Record<string, string | undefined>): unknown;
  };
  return { names: new Set(Object.keys(mod.envSchema.shape)), loadConfig: mod.loadConfig };
}

/**
 * Check an env record a deployment gives a service: every name must be one the service reads (a name
 * it ignores is a typo or a setting that silently does nothing) and the whole record must load.
 * Returns the problems, empty when all is well.
 */
export async function envProblems(svc: ServiceName, env: Record<string, string>): Promise<string[]> {
  const contract = await serviceEnv(svc);
  const problems = Object.keys(env)
    .filter((k) => !contract.names.has(k))
    .map((k) => `${svc}: ${k} is not a setting of this service`);
  if (env.LOG_FORMAT === "pretty") {
    problems.push(`${svc}: LOG_FORMAT=pretty needs pino-pretty, a dev dependency the image does not have`);
  }
  try {
    contract.loadConfig(env);
  } catch (e) {
    problems.push(`${svc}: ${(e as Error).message}`);
  }
  return problems;
}
