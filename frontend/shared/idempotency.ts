/**
 * One `Idempotency-Key` per form submission: the key is made on the first attempt and kept
 * while the same submission is retried (a double click, a timeout answered later), so the
 * server does the write once; it is dropped once the write succeeded or the form changed, and
 * the next submission gets a new one.
 */
export class IdempotencyKey {
  private current: string | null = null;

  constructor(private readonly make: () => string = () => crypto.randomUUID()) {}

  /** The key of the submission in progress, made on first use. */
  get(): string {
    this.current ??= this.make();
    return this.current;
  }

  /** Forgets the key: the next submission is a new one. */
  reset(): void {
    this.current = null;
  }
}

/**
 * Keys for a page's one-click actions, one per action (`rotate`, `replay:whd_…`): a click that
 * failed and is tried again sends the same key, so a write the server did make but could not
 * answer is not made twice; a success forgets it.
 */
export class IdempotencyKeys {
  private readonly keys = new Map<string, IdempotencyKey>();

  constructor(private readonly make?: () => string) {}

  /** The key of `action`'s attempt in progress. */
  get(action: string): string {
    let key = this.keys.get(action);
    if (!key) {
      key = new IdempotencyKey(this.make);
      this.keys.set(action, key);
    }
    return key.get();
  }

  /** `action` succeeded: its next attempt is a new write. */
  done(action: string): void {
    this.keys.delete(action);
  }
}
