/**
 * A min-heap of (due time, stream sequence) pairs in two Float64Arrays: 16 bytes an entry, no object per
 * entry, so a million delayed messages due in the same minute cost ~16–32 MB instead of the hundreds of
 * MB that message objects would. Ties on due time break by sequence (publish order).
 */
export class DueHeap {
  #due: Float64Array;
  #seq: Float64Array;
  #size = 0;
  readonly #minCapacity: number;

  /** `capacity`: initial room, entries (grows by doubling, shrinks back when mostly empty). */
  constructor(capacity = 1024) {
    this.#minCapacity = capacity;
    this.#due = new Float64Array(capacity);
    this.#seq = new Float64Array(capacity);
  }

  /** Entries held. */
  get size(): number {
    return this.#size;
  }

  /** Bytes held by the arrays (for tests and metrics). */
  get bytes(): number {
    return this.#due.byteLength + this.#seq.byteLength;
  }

  /** Due time of the earliest entry, or Infinity when empty. */
  peekDue(): number {
    return this.#size > 0 ? this.#due[0]! : Number.POSITIVE_INFINITY;
  }

  /** Add an entry. */
  push(due: number, seq: number): void {
    if (this.#size === this.#due.length) this.#resize(this.#due.length * 2);
    let i = this.#size++;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#less(due, seq, this.#due[p]!, this.#seq[p]!)) break;
      this.#due[i] = this.#due[p]!;
      this.#seq[i] = this.#seq[p]!;
      i = p;
    }
    this.#due[i] = due;
    this.#seq[i] = seq;
  }

  /** Remove the earliest entry and return its sequence (undefined when empty). */
  pop(): number | undefined {
    if (this.#size === 0) return undefined;
    const top = this.#seq[0]!;
    const n = --this.#size;
    if (n > 0) {
      const due = this.#due[n]!;
      const seq = this.#seq[n]!;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && this.#less(this.#due[r]!, this.#seq[r]!, this.#due[l]!, this.#seq[l]!) ? r : l;
        if (!this.#less(this.#due[c]!, this.#seq[c]!, due, seq)) break;
        this.#due[i] = this.#due[c]!;
        this.#seq[i] = this.#seq[c]!;
        i = c;
      }
      this.#due[i] = due;
      this.#seq[i] = seq;
    }
    if (n < this.#due.length / 4 && this.#due.length > this.#minCapacity) {
      this.#resize(Math.max(this.#minCapacity, this.#due.length / 2));
    }
    return top;
  }

  /** Drop everything and give the memory back. */
  clear(): void {
    this.#size = 0;
    this.#due = new Float64Array(this.#minCapacity);
    this.#seq = new Float64Array(this.#minCapacity);
  }

  #less(d1: number, s1: number, d2: number, s2: number): boolean {
    return d1 < d2 || (d1 === d2 && s1 < s2);
  }

  #resize(capacity: number): void {
    const due = new Float64Array(capacity);
    const seq = new Float64Array(capacity);
    due.set(this.#due.subarray(0, this.#size));
    seq.set(this.#seq.subarray(0, this.#size));
    this.#due = due;
    this.#seq = seq;
  }
}
