import { Component, OnDestroy, OnInit, inject, input, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatCheckboxModule } from '@angular/material/checkbox';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { MatSelectModule } from '@angular/material/select';
import { RouterLink } from '@angular/router';

import {
  WebhookService,
  type WebhookDelivery,
  type WebhookDeliveryAttempt,
  type WebhookEndpoint,
} from '@gen/paymesh/webhook/v1/webhook_pb';
import { Actions } from '@shared/actions';
import { Confirm } from '@shared/confirm';
import { TimePipe } from '@shared/format';
import { IdempotencyKey, IdempotencyKeys } from '@shared/idempotency';
import { describeError } from '@shared/rest';
import { timestampFromDate } from '@shared/time';
import { Catalog } from '../catalog';
import { EventsField } from '../events-field';
import { SecretPanel } from '../secret-panel';
import { Session } from '../session';

const PAGE_SIZE = 25;
/** After a send or a replay the log is read again every second for this long, to show the outcome. */
const FOLLOW_MS = 20_000;
const FOLLOW_EVERY_MS = 1_000;
/** The most deliveries one "replay since" re-sends. */
const REPLAY_LIMIT = 100;

/** A `datetime-local` value (local time) for a date: what the input shows. */
export function localInputValue(date: Date): string {
  const pad = (n: number): string => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/**
 * One webhook endpoint: edit, disable, rotate its secret, send a test event, replay, and the
 * delivery log with each attempt's status, latency and response body.
 */
@Component({
  selector: 'pm-endpoint-page',
  imports: [
    FormsModule, RouterLink, MatButtonModule, MatCheckboxModule, MatFormFieldModule, MatInputModule, MatSelectModule,
    TimePipe, EventsField, SecretPanel,
  ],
  templateUrl: './endpoint.html',
  styles: `
    table { width: 100%; border-collapse: collapse; }
    th, td { text-align: left; padding: 0.5rem; border-bottom: 1px solid #e6e8ee; font-size: 0.9rem; vertical-align: top; }
    th { font-weight: 500; color: #545b69; }
    .attempts > td { background: #f8f9fc; }
    .attempts table th, .attempts table td { border: none; padding: 0.25rem 0.5rem; }
    .body { margin: 0; max-width: 40rem; max-height: 8rem; overflow: auto; white-space: pre-wrap; word-break: break-all; }
    .actions { white-space: nowrap; }
    .url { width: 24rem; }
    .summary { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 0.75rem 1.5rem; margin: 0; }
    .summary dt { font-size: 0.8rem; color: #545b69; } .summary dd { margin: 0; word-break: break-all; }
  `,
})
export class EndpointPage implements OnInit, OnDestroy {
  readonly id = input.required<string>();
  readonly session = inject(Session);
  readonly catalog = inject(Catalog);
  private readonly confirm = inject(Confirm);
  readonly endpoint = signal<WebhookEndpoint | null>(null);
  readonly deliveries = signal<WebhookDelivery[]>([]);
  readonly attempts = signal<Partial<Record<string, WebhookDeliveryAttempt[]>>>({});
  readonly open = signal<string | null>(null);
  readonly nextToken = signal('');
  readonly secret = signal('');
  private readonly actions = new Actions();
  readonly error = this.actions.error;
  readonly notice = this.actions.notice;
  readonly busy = this.actions.busy;
  readonly editing = signal(false);
  readonly editEvents = signal<string[]>([]);
  editUrl = '';
  editDescription = '';
  readonly deliveryStatuses = ['pending', 'delivered', 'failing', 'dead'];
  statusFilter = '';
  replaySince = localInputValue(new Date(Date.now() - 24 * 3600_000));
  replayDelivered = false;
  testType = 'payment.succeeded';
  private readonly saveKey = new IdempotencyKey();
  private readonly keys = new IdempotencyKeys();
  private followTimer: ReturnType<typeof setTimeout> | undefined;

  ngOnInit(): void {
    void this.load();
    void this.loadDeliveries();
    this.catalog.load().catch(() => undefined);
  }

  ngOnDestroy(): void {
    clearTimeout(this.followTimer);
  }

  async load(): Promise<void> {
    try {
      this.endpoint.set(await this.session.api(WebhookService.method.getWebhookEndpoint, { id: this.id() }));
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  async loadDeliveries(pageToken = ''): Promise<void> {
    try {
      const response = await this.session.api(WebhookService.method.listWebhookDeliveries, {
        endpointId: this.id(),
        status: this.statusFilter,
        pageSize: PAGE_SIZE,
        pageToken,
      });
      this.deliveries.update((current) => (pageToken ? [...current, ...response.deliveries] : response.deliveries));
      this.nextToken.set(response.nextPageToken);
      const open = this.open();
      if (open && !pageToken) await this.loadAttempts(open);
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  /** The Refresh button: the log now, then again every second until what it lists settles. */
  async refresh(): Promise<void> {
    await this.loadDeliveries();
    this.follow();
  }

  /** Reads the log again every second for a while, so a send's outcome appears by itself. */
  private follow(until = Date.now() + FOLLOW_MS): void {
    clearTimeout(this.followTimer);
    this.followTimer = setTimeout(async () => {
      await this.loadDeliveries();
      const settled = this.deliveries().every((d) => d.status === 'delivered' || d.status === 'dead');
      if (!settled && Date.now() < until) this.follow(until);
    }, FOLLOW_EVERY_MS);
  }

  attemptsOf(deliveryId: string): WebhookDeliveryAttempt[] {
    return this.attempts()[deliveryId] ?? [];
  }

  async toggleAttempts(delivery: WebhookDelivery): Promise<void> {
    if (this.open() === delivery.id) {
      this.open.set(null);
      return;
    }
    this.open.set(delivery.id);
    await this.loadAttempts(delivery.id);
  }

  private async loadAttempts(deliveryId: string): Promise<void> {
    try {
      const response = await this.session.api(WebhookService.method.listWebhookDeliveryAttempts, { deliveryId });
      this.attempts.update((all) => ({ ...all, [deliveryId]: response.attempts }));
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  startEdit(endpoint: WebhookEndpoint): void {
    this.editUrl = endpoint.url;
    this.editDescription = endpoint.description;
    this.editEvents.set([...endpoint.enabledEvents]);
    this.saveKey.reset();
    this.editing.set(true);
  }

  formChanged(): void {
    this.saveKey.reset();
  }

  async save(): Promise<void> {
    if (!this.editUrl.trim() || !this.editEvents().length) {
      this.error.set('Enter the endpoint URL and pick at least one event type.');
      return;
    }
    await this.actions.run(async () => {
      const updated = await this.session.api(
        WebhookService.method.updateWebhookEndpoint,
        { id: this.id(), url: this.editUrl.trim(), description: this.editDescription.trim(), enabledEvents: this.editEvents() },
        { idempotencyKey: this.saveKey.get() },
      );
      this.saveKey.reset();
      this.endpoint.set(updated);
      this.editing.set(false);
      this.notice.set('Endpoint saved.');
    });
  }

  async setEnabled(enabled: boolean): Promise<void> {
    const endpoint = this.endpoint();
    if (!endpoint) return;
    if (!enabled) {
      const confirmed = await this.confirm.ask({
        title: 'Disable this endpoint?',
        message: `Stop sending events to ${endpoint.url}? Events that happen while it is disabled are not delivered to it.`,
        action: 'Disable',
      });
      if (!confirmed) return;
    }
    const action = `enabled:${enabled}`;
    await this.actions.run(async () => {
      const updated = await this.session.api(
        WebhookService.method.updateWebhookEndpoint,
        { id: this.id(), enabled },
        { idempotencyKey: this.keys.get(action) },
      );
      this.keys.done(action);
      this.endpoint.set(updated);
      this.notice.set(enabled ? 'Endpoint enabled.' : 'Endpoint disabled.');
    });
  }

  async rotate(): Promise<void> {
    const confirmed = await this.confirm.ask({
      title: 'Rotate the signing secret?',
      message: 'A new secret signs from now on. The current one keeps signing beside it for an overlap (24 hours by default), so your receiver can switch without missing an event.',
      action: 'Rotate secret',
    });
    if (!confirmed) return;
    await this.actions.run(async () => {
      const rotated = await this.session.api(
        WebhookService.method.rotateWebhookEndpointSecret,
        { id: this.id() },
        { idempotencyKey: this.keys.get('rotate') },
      );
      this.keys.done('rotate');
      this.secret.set(rotated.secret);
      this.endpoint.set(rotated);
    });
  }

  /** Sends the chosen type's example event to this endpoint only, and follows its delivery. */
  async sendTest(): Promise<void> {
    const action = `test:${this.testType}`;
    await this.actions.run(async () => {
      const delivery = await this.session.api(
        WebhookService.method.testWebhookEndpoint,
        { id: this.id(), type: this.testType },
        { idempotencyKey: this.keys.get(action) },
      );
      this.keys.done(action);
      this.notice.set(`Test ${delivery.eventType} event ${delivery.eventId} sent: delivery ${delivery.id} is ${delivery.status}.`);
      this.open.set(delivery.id);
      await this.loadDeliveries();
      this.follow();
    });
  }

  async replay(delivery: WebhookDelivery): Promise<void> {
    const action = `replay:${delivery.id}`;
    await this.actions.run(async () => {
      const replayed = await this.session.api(
        WebhookService.method.replayWebhookDelivery,
        { id: delivery.id },
        { idempotencyKey: this.keys.get(action) },
      );
      this.keys.done(action);
      this.notice.set(`Delivery ${delivery.id} replayed: now ${replayed.status}.`);
      await this.loadDeliveries();
      this.follow();
    });
  }

  async replaySinceTime(): Promise<void> {
    const since = new Date(this.replaySince);
    if (Number.isNaN(since.getTime())) {
      this.error.set('Enter the date and time to replay from.');
      return;
    }
    const which = this.replayDelivered ? 'dead and delivered' : 'dead';
    const confirmed = await this.confirm.ask({
      title: 'Replay deliveries?',
      message: `Send again up to ${REPLAY_LIMIT} ${which} deliveries made since ${since.toLocaleString()} to this endpoint? Receivers see the same event ids again.`,
      action: 'Replay',
    });
    if (!confirmed) return;
    const action = `replay-since:${since.toISOString()}:${this.replayDelivered}`;
    await this.actions.run(async () => {
      const response = await this.session.api(
        WebhookService.method.replayWebhookDeliveries,
        { endpointId: this.id(), since: timestampFromDate(since), includeDelivered: this.replayDelivered, limit: REPLAY_LIMIT },
        { idempotencyKey: this.keys.get(action) },
      );
      this.keys.done(action);
      this.notice.set(`${response.deliveryIds.length} deliveries replayed.`);
      await this.loadDeliveries();
      this.follow();
    });
  }
}
