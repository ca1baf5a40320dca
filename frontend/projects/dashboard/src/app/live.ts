import { Injectable, inject, signal } from '@angular/core';

import { AdminService, type Overview } from '@gen/paymesh/admin/v1/admin_pb';
import { stream } from '@shared/rest';
import { Session } from './session';

export type LiveState = 'connecting' | 'live' | 'disconnected';

/** Reconnect delays: doubling from the first to the last, with jitter so tabs do not align. */
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 15_000;

/**
 * The overview as the server streams it (WatchOverview, Server-Sent Events through the edge),
 * with the connection's state for the live indicator. Each connection gets a fresh short-lived
 * stream token; a broken connection is retried with backoff until stop().
 */
@Injectable({ providedIn: 'root' })
export class LiveOverview {
  private readonly session = inject(Session);

  readonly overview = signal<Overview | null>(null);
  readonly state = signal<LiveState>('disconnected');
  /** Counts the updates received, so charts know when to refresh. */
  readonly updates = signal(0);

  private running = false;
  private abort: AbortController | null = null;
  private retryMs = RETRY_FIRST_MS;
  private timer: ReturnType<typeof setTimeout> | undefined;

  /** Only this merchant's figures; empty for all merchants. */
  private merchantId = '';

  /** Starts streaming (idempotent). */
  start(): void {
    if (this.running) return;
    this.running = true;
    void this.connect();
  }

  /** Streams one merchant's figures (or everyone's, for ''), reconnecting when it changes. */
  scope(merchantId: string): void {
    if (merchantId === this.merchantId) return;
    this.merchantId = merchantId;
    this.overview.set(null);
    if (this.running) {
      this.stop();
      this.start();
    }
  }

  /** Stops streaming and any pending reconnect. */
  stop(): void {
    this.running = false;
    clearTimeout(this.timer);
    this.abort?.abort();
    this.abort = null;
    this.state.set('disconnected');
  }

  private async connect(): Promise<void> {
    if (!this.running) return;
    if (this.state() !== 'live') this.state.set('connecting');
    const abort = new AbortController();
    this.abort = abort;
    let failed = false;
    try {
      const token = await this.session.api(AdminService.method.createStreamToken, {});
      await stream(
        AdminService.method.watchOverview,
        { streamToken: token.streamToken, merchantId: this.merchantId, livemode: false },
        (overview) => {
          if (abort.signal.aborted) return; // a message of a stream being replaced
          this.overview.set(overview);
          this.updates.update((n) => n + 1);
          this.state.set('live');
          this.retryMs = RETRY_FIRST_MS;
        },
        { signal: abort.signal, onOpen: () => this.state.set('live') },
      );
    } catch {
      failed = true;
    }
    if (!this.running || abort.signal.aborted) return;
    if (failed) {
      this.state.set('disconnected');
      const delay = this.retryMs * (0.75 + Math.random() * 0.5);
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
      this.timer = setTimeout(() => void this.connect(), delay);
    } else {
      // The server (or a proxy's timeout) ended a healthy stream: reopen it at once.
      void this.connect();
    }
  }
}
