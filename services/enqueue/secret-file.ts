import { readFileSync } from "node:fs";
import { ConfigError } from "../../shared/config.ts";

/**
 * Read a secret file named by a `*_FILE` variable (a mounted Kubernetes or Docker secret); "" when the
 * variable is unset. A missing or unreadable file is a configuration error naming the variable.
 */
export function readSecretFile(variable: string, path: string | undefined): string {
  if (path === undefined) return "";
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? "unreadable";
    throw new ConfigError(`invalid configuration:\n  ${variable}: cannot read ${path} (${why})`);
  }
}
