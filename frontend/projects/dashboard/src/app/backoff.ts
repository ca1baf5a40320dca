/**
 * Reconnect delays: doubling from `firstMs` up to `maxMs`, each spread by ±25 % jitter so that
 * many tabs do not reconnect in step. A connection that stayed up for `healthyMs` resets it, so a
 * server that ends streams cleanly but at once (a crash loop, a proxy that drops them) backs off,
 * while a long healthy stream that ends reconnects quickly.
 */
export class Backoff {
  private nextMs: number;

  constructor(
    private readonly firstMs: number,
    private readonly maxMs: number,
    private readonly healthyMs: number,
    private readonly random: () => number = Math.random,
  ) {
    this.nextMs = firstMs;
  }

  /** The delay before the next attempt, given how long the last connection was up. */
  delayAfter(upMs: number): number {
    if (upMs >= this.healthyMs) {
      this.nextMs = this.firstMs;
    }
    const delay = this.nextMs * (0.75 + this.random() * 0.5);
    this.nextMs = Math.min(this.nextMs * 2, this.maxMs);
    return delay;
  }
}
