import type { TaskState } from "../../../shared/task.ts";
import type { RunRecord } from "../../support/stack.ts";

/** What the run log and the state records say about a set of accepted tasks. */
export type RunAudit = {
  tasks: number;
  /** Final statuses by name; `missing` for no record, else the non-final status. */
  statuses: Record<string, number>;
  /** Handler runs of these tasks in the run log. */
  runs: number;
  /** Runs beyond the first per task. */
  extraRuns: number;
  /** Tasks that ran more than once. */
  rerunTasks: number;
  /** Extra runs the crash explains (by default: the earlier run was on a worker pid that was SIGKILLed). */
  explained: number;
  /**
   * Reruns at the attempt number of the run before: that run was its attempt's first delivery and its
   * worker died before recording `running` (see {@link auditRuns}).
   */
  sameAttemptReruns: number;
  /** Every violation of the rules below, described (the first 20 are kept). */
  violations: string[];
  violationCount: number;
  /** Tasks whose final state was written other than exactly once (when counted). */
  finalWritesNotOnce: number;
};

/** The pid at the end of a default worker id (`<hostname>-<pid>`). */
function pidOfWorkerId(workerId: string | undefined): number | undefined {
  const m = /-(\d+)$/.exec(workerId ?? "");
  return m ? Number(m[1]) : undefined;
}

/**
 * Check the at-least-once contract of a crash test, task by task:
 *
 * - the task is `completed` (or `expect`), exactly once: its final state was written once (when
 *   `finalWrites` is given: a core subscription saw every write);
 * - it ran at least once, and every run but the last was on a worker that was SIGKILLed (`killedPids`):
 *   a handler runs again only for an attempt whose worker died, never because of a dispatcher crash
 *   (`explains` replaces this rule where another crash accounts for reruns);
 * - attempt numbers never go down from run to run, and each attempt runs at most twice: a redelivery
 *   counts one more attempt only when the record says the attempt ran (`running`), and a first
 *   delivery writes `running` only once it lasts RUNNING_WRITE_AFTER_MS, so a worker killed sooner
 *   leaves no trace and the redelivery runs the same attempt again; but a redelivery records `running`
 *   before its handler starts, so the run after it is a new attempt. The record's `attempts` and worker
 *   are the last run's. With `attemptsGrow: false` (a broker crash: runs may overlap and repeat an
 *   attempt) neither is checked, and the record's worker need only be one that ran it.
 */
export function auditRuns(o: {
  ids: readonly string[];
  states: Map<string, TaskState | undefined>;
  runs: readonly RunRecord[];
  killedPids: ReadonlySet<number>;
  explains?: (earlier: RunRecord, next: RunRecord) => boolean;
  attemptsGrow?: boolean;
  finalWrites?: ReadonlyMap<string, number>;
  expect?: TaskState["status"];
}): RunAudit {
  const explains = o.explains ?? ((earlier: RunRecord) => o.killedPids.has(earlier.pid));
  const expectStatus = o.expect ?? "completed";
  const byId = new Map<string, RunRecord[]>();
  const wanted = new Set(o.ids);
  for (const r of o.runs) {
    if (!wanted.has(r.id)) continue;
    const l = byId.get(r.id);
    if (l) l.push(r);
    else byId.set(r.id, [r]);
  }
  const a: RunAudit = {
    tasks: o.ids.length,
    statuses: {},
    runs: 0,
    extraRuns: 0,
    rerunTasks: 0,
    explained: 0,
    sameAttemptReruns: 0,
    violations: [],
    violationCount: 0,
    finalWritesNotOnce: 0,
  };
  const violate = (msg: string) => {
    a.violationCount++;
    if (a.violations.length < 20) a.violations.push(msg);
  };
  for (const id of o.ids) {
    const s = o.states.get(id);
    const status = s?.status ?? "missing";
    a.statuses[status] = (a.statuses[status] ?? 0) + 1;
    if (status !== expectStatus) violate(`${id}: status ${status}, expected ${expectStatus}`);
    if (o.finalWrites) {
      const w = o.finalWrites.get(id) ?? 0;
      if (w !== 1) {
        a.finalWritesNotOnce++;
        violate(`${id}: final state written ${w} times`);
      }
    }
    const runs = (byId.get(id) ?? []).sort((x, y) => x.at - y.at || x.attempt - y.attempt);
    a.runs += runs.length;
    if (runs.length === 0) {
      if (status === "completed") violate(`${id}: completed without a recorded run`);
      continue;
    }
    if (runs.length > 1) {
      a.rerunTasks++;
      a.extraRuns += runs.length - 1;
    }
    for (let k = 0; k < runs.length - 1; k++) {
      const r = runs[k]!;
      if (explains(r, runs[k + 1]!)) a.explained++;
      else
        violate(
          `${id}: run ${k + 1} of ${runs.length} (attempt ${r.attempt}, pid ${r.pid}) ran again unexplained`,
        );
      if (o.attemptsGrow === false) continue;
      const next = runs[k + 1]!;
      if (next.attempt === r.attempt) {
        a.sameAttemptReruns++;
        // only the attempt's first run may leave no `running` behind
        if (k > 0 && runs[k - 1]!.attempt === r.attempt)
          violate(
            `${id}: attempt ${r.attempt} ran ${runs.filter((x) => x.attempt === r.attempt).length} times`,
          );
      } else if (next.attempt < r.attempt)
        violate(`${id}: attempt went down between runs (${r.attempt} → ${next.attempt})`);
    }
    const last = runs.at(-1)!;
    if (s && status === "completed") {
      if (o.attemptsGrow !== false && s.attempts !== last.attempt)
        violate(`${id}: record says ${s.attempts} attempts, the last run was attempt ${last.attempt}`);
      const pid = pidOfWorkerId(s.workerId);
      if (o.attemptsGrow === false) {
        // runs overlapped across the crash: whichever finished last wrote the record, but it ran here
        if (pid !== undefined && !runs.some((r) => r.pid === pid))
          violate(`${id}: completed by pid ${pid}, which never ran it`);
      } else if (pid !== undefined && pid !== last.pid)
        violate(`${id}: completed by pid ${pid}, but the last run was on pid ${last.pid}`);
    }
  }
  return a;
}
