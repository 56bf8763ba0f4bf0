import { readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "./kustomize.ts";

/** One Dockerfile instruction, continuation lines joined, with its heredoc body if it has one. */
export type Instruction = { op: string; args: string; heredoc?: string };

/** Parse a Dockerfile into instructions (comments dropped; `<<'EOF'` heredocs attached). */
export function parseDockerfile(text: string): Instruction[] {
  const lines = text.split("\n");
  const out: Instruction[] = [];
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    while (line.endsWith("\\") && i + 1 < lines.length) line = `${line.slice(0, -1)} ${lines[++i]!.trim()}`;
    const [, op = "", args = ""] = /^\s*(\S+)\s*(.*)$/.exec(line) ?? [];
    const ins: Instruction = { op: op.toUpperCase(), args };
    const hd = /<<-?['"]?([A-Za-z_]+)['"]?/.exec(args);
    if (hd) {
      const body: string[] = [];
      while (++i < lines.length && lines[i] !== hd[1]) body.push(lines[i]!);
      ins.heredoc = `${body.join("\n")}\n`;
    }
    out.push(ins);
  }
  return out;
}

/** The repository's Dockerfile, parsed. */
export const dockerfile = () => parseDockerfile(readFileSync(join(repoRoot, "Dockerfile"), "utf8"));

function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i]!;
    if (ch === "*" && glob[i + 1] === "*") {
      re += ".*";
      i++;
      if (glob[i + 1] === "/") i++;
    } else if (ch === "*") re += "[^/]*";
    else if (ch === "?") re += "[^/]";
    else re += ch.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

/**
 * Whether `.dockerignore` lets a path (relative to the context) into the build: patterns in order,
 * the last match wins, `!` re-includes, and a pattern that matches a folder covers what is inside it.
 */
export function dockerignoreAllows(path: string, ignoreText: string): boolean {
  const patterns = ignoreText
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  const parts = path.split("/");
  const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join("/"));
  let included = true;
  for (const p of patterns) {
    const negate = p.startsWith("!");
    const re = globToRegExp((negate ? p.slice(1) : p).replace(/\/$/, ""));
    if (prefixes.some((x) => re.test(x))) included = negate;
  }
  return included;
}
