import { Injectable, inject, signal } from '@angular/core';

import { AdminService, type Overview } from '@gen/paymesh/admin/v1/admin_pb';
import { stream } from '@shared/rest';
import { Backoff } from './backoff';
import { Session } from './session';

export type LiveState = 'connecting' | 'live' | 'disconnected';

/** Reconnect delays: doubling from the first to the last, with jitter so tabs do not align. */
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 15_000;
/** A stream that stayed open this long was healthy: the next reconnect starts from the first delay. */
const HEALTHY_MS = 30_000;

/**
 * The overview as the server streams it (WatchOverview, Server-Sent Events through the edge),
 * with the connection's state for the live indicator. Each connection gets a fresh short-lived
 * stream token, sent in the Authorization header (never in the URL, where logs and history keep
 * it). Whether the stream broke or the server ended it, it is reopened with backoff until stop().
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
  private readonly backoff = new Backoff(RETRY_FIRST_MS, RETRY_MAX_MS, HEALTHY_MS);
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
    let openedAt = 0;
    try {
      const token = await this.session.api(AdminService.method.createStreamToken, {});
      await stream(
        AdminService.method.watchOverview,
        { merchantId: this.merchantId, livemode: false },
        (overview) => {
          if (abort.signal.aborted) return; // a message of a stream being replaced
          this.overview.set(overview);
          this.updates.update((n) => n + 1);
          this.state.set('live');
        },
        {
          headers: { Authorization: `Bearer ${token.streamToken}` },
          signal: abort.signal,
          onOpen: () => {
            openedAt = Date.now();
            this.state.set('live');
          },
        },
      );
    } catch {
      // Unless stopped or replaced: then the state is stop()'s or the newer connection's.
      if (!abort.signal.aborted) this.state.set('disconnected');
    }
    if (!this.running || abort.signal.aborted) return;
    // Even a cleanly ended stream waits: a server that ends every stream at once would
    // otherwise be hammered with token requests and reconnects.
    const delay = this.backoff.delayAfter(openedAt ? Date.now() - openedAt : 0);
    this.timer = setTimeout(() => void this.connect(), delay);
  }
}
