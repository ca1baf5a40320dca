import { Component, OnInit, computed, inject, input, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { MatSelectModule } from '@angular/material/select';
import { MatTableModule } from '@angular/material/table';
import { RouterLink } from '@angular/router';
import type { Timestamp } from '@bufbuild/protobuf/wkt';

import { LedgerService, type Entry } from '@gen/paymesh/ledger/v1/ledger_pb';
import { PaymentService, type Payment, type Refund } from '@gen/paymesh/payment/v1/payment_pb';
import { WebhookService, type Event, type WebhookDelivery } from '@gen/paymesh/webhook/v1/webhook_pb';
import { Confirm } from '@shared/confirm';
import { MoneyPipe, TimePipe } from '@shared/format';
import { IdempotencyKey } from '@shared/idempotency';
import { formatMoney, parseMajor } from '@shared/money';
import { describeError } from '@shared/rest';
import { dateOf, eventConcerns, sortTimeline, type TimelineItem } from '../figures';
import { Session } from '../session';

/** Lists are read in pages of this size, at most this many pages each (a bound, not a goal). */
const PAGE_SIZE = 100;
const PAGES_MAX = 5;

/**
 * One payment: summary, its timeline (created, events, webhook deliveries, refunds, ledger
 * entries) gathered from the merchant API, ledger entries, refunds, and the refund action.
 */
@Component({
  selector: 'pm-payment-detail-page',
  imports: [FormsModule, RouterLink, MatTableModule, MatButtonModule, MatFormFieldModule, MatInputModule, MatSelectModule, MoneyPipe, TimePipe],
  templateUrl: './payment-detail.html',
  styles: `
    .summary { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 0.75rem 1.5rem; margin: 0; }
    .summary dt { font-size: 0.8rem; color: #545b69; } .summary dd { margin: 0; }
    .timeline { list-style: none; margin: 0; padding: 0; border-left: 2px solid #c9d2e3; }
    .timeline li { position: relative; padding: 0 0 0.75rem 1rem; }
    .timeline li::before { content: ''; position: absolute; left: -6px; top: 4px; width: 10px; height: 10px; border-radius: 50%; background: #2f6fdb; }
    .timeline li.delivery::before { background: #7a5cd6; } .timeline li.ledger::before { background: #2e9d55; } .timeline li.refund::before { background: #d97706; }
    .refund-form { display: flex; flex-wrap: wrap; gap: 0.75rem; align-items: center; }
    .num { text-align: right; }
  `,
})
export class PaymentDetailPage implements OnInit {
  readonly id = input.required<string>();
  readonly session = inject(Session);
  private readonly confirm = inject(Confirm);
  readonly payment = signal<Payment | null>(null);
  readonly refunds = signal<Refund[]>([]);
  readonly events = signal<Event[]>([]);
  readonly deliveries = signal<WebhookDelivery[]>([]);
  readonly entries = signal<Entry[]>([]);
  /** Some list was longer than its bound: the timeline may miss its oldest items. */
  readonly partial = signal(false);
  readonly error = signal('');
  readonly refundError = signal('');
  readonly refundNotice = signal('');
  readonly busy = signal(false);
  readonly refundable = computed(() => {
    const p = this.payment();
    return p ? p.amountReceived - p.amountRefunded : 0n;
  });
  /** Admins may refund what a succeeded payment has left; no one else sees the form. */
  readonly canRefund = computed(
    () => this.session.isAdmin() && this.payment()?.status === 'succeeded' && this.refundable() > 0n,
  );
  readonly timeline = computed(() => this.buildTimeline());
  readonly entryColumns = ['time', 'account', 'direction', 'amount', 'source'];
  readonly refundColumns = ['id', 'amount', 'status', 'reason', 'created'];

  refundAmount = '';
  refundReason = 'requested_by_customer';
  /** One key per refund the user means to make, so a double click or a retry refunds once. */
  readonly refundKey = new IdempotencyKey();

  ngOnInit(): void {
    void this.load();
  }

  async load(): Promise<void> {
    try {
      const payment = await this.session.api(PaymentService.method.getPayment, { id: this.id() });
      this.payment.set(payment);
      this.error.set('');
      this.partial.set(false);
      const refunds = await this.pages(async (pageToken) => {
        const r = await this.session.api(PaymentService.method.listRefunds, { paymentId: payment.id, pageSize: PAGE_SIZE, pageToken });
        return { items: r.refunds, next: r.nextPageToken };
      });
      this.refunds.set(refunds);
      const since = payment.createTime;
      const [events, entries] = await Promise.all([this.eventsOf(payment.id, since), this.entriesOf(payment.id, refunds, since)]);
      this.events.set(events);
      this.entries.set(entries);
      this.deliveries.set(await this.deliveriesOf(events, since));
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  /** The events whose object is this payment or one of its refunds. */
  private async eventsOf(paymentId: string, since: Timestamp | undefined): Promise<Event[]> {
    const events = await this.pages(async (pageToken) => {
      const r = await this.session.api(WebhookService.method.listEvents, { createdGte: since, pageSize: PAGE_SIZE, pageToken });
      return { items: r.events, next: r.nextPageToken };
    });
    return events.filter((e) => eventConcerns(e.data, paymentId));
  }

  /** The ledger entries the payment and its refunds caused. */
  private async entriesOf(paymentId: string, refunds: Refund[], since: Timestamp | undefined): Promise<Entry[]> {
    const sources = new Set([paymentId, ...refunds.map((r) => r.id)]);
    const entries = await this.pages(async (pageToken) => {
      const r = await this.session.api(LedgerService.method.listBalanceEntries, { createdGte: since, pageSize: PAGE_SIZE, pageToken });
      return { items: r.entries, next: r.nextPageToken };
    });
    return entries.filter((e) => sources.has(e.sourceId));
  }

  /** The deliveries of those events, to every endpoint of the merchant. */
  private async deliveriesOf(events: Event[], since: Timestamp | undefined): Promise<WebhookDelivery[]> {
    if (!events.length) return [];
    const eventIds = new Set(events.map((e) => e.id));
    const endpoints = await this.session.api(WebhookService.method.listWebhookEndpoints, { pageSize: PAGE_SIZE });
    const perEndpoint = await Promise.all(
      endpoints.webhookEndpoints.map((endpoint) =>
        this.pages(async (pageToken) => {
          const r = await this.session.api(WebhookService.method.listWebhookDeliveries, {
            endpointId: endpoint.id, createdGte: since, pageSize: PAGE_SIZE, pageToken,
          });
          return { items: r.deliveries, next: r.nextPageToken };
        }),
      ),
    );
    return perEndpoint.flat().filter((d) => eventIds.has(d.eventId));
  }

  /** Up to PAGES_MAX pages of a list; marks the page partial when there were more. */
  private async pages<T>(page: (token: string) => Promise<{ items: T[]; next: string }>): Promise<T[]> {
    const all: T[] = [];
    let token = '';
    for (let n = 0; n < PAGES_MAX; n++) {
      const { items, next } = await page(token);
      all.push(...items);
      if (!next) return all;
      token = next;
    }
    this.partial.set(true);
    return all;
  }

  private buildTimeline(): TimelineItem[] {
    const p = this.payment();
    if (!p) return [];
    const items: TimelineItem[] = [
      { time: dateOf(p.createTime), kind: 'created', title: 'Payment created', detail: formatMoney(p.amount, p.currency), id: p.id },
    ];
    for (const e of this.events()) {
      items.push({ time: dateOf(e.createTime), kind: 'event', title: e.type, detail: 'event', id: e.id });
    }
    for (const d of this.deliveries()) {
      const last = d.lastStatusCode ? `HTTP ${d.lastStatusCode}` : d.lastError;
      items.push({
        time: dateOf(d.createTime), kind: 'delivery', title: `Webhook ${d.eventType} → ${d.endpointId}`,
        detail: `${d.status}, ${d.attemptCount} attempt${d.attemptCount === 1 ? '' : 's'}${last ? ', ' + last : ''}`, id: d.id,
      });
    }
    for (const r of this.refunds()) {
      items.push({ time: dateOf(r.createTime), kind: 'refund', title: `Refund ${r.status}`, detail: formatMoney(r.amount, r.currency), id: r.id });
    }
    for (const e of this.entries()) {
      items.push({
        time: dateOf(e.createTime), kind: 'ledger', title: `Ledger ${e.direction}`,
        detail: `${formatMoney(e.amount, e.currency)} on ${e.accountId}`, id: e.id,
      });
    }
    return sortTimeline(items);
  }

  resetRefundKey(): void {
    this.refundKey.reset();
  }

  async refund(): Promise<void> {
    const payment = this.payment();
    if (!payment || this.busy()) return;
    // A typed amount is sent as it is; an empty field means all that is left, which is sent as
    // no amount at all (never 0) and only once the user has confirmed it.
    let amount: bigint | undefined;
    if (this.refundAmount.trim()) {
      const parsed = parseMajor(this.refundAmount, payment.currency);
      if (parsed === null || parsed <= 0n || parsed > this.refundable()) {
        this.refundError.set('Enter an amount up to what is left to refund.');
        return;
      }
      amount = parsed;
    } else {
      this.busy.set(true);
      const confirmed = await this.confirm.ask({
        title: 'Refund the full remaining amount?',
        message: `Refund ${formatMoney(this.refundable(), payment.currency)}, all that is left of ${payment.id}, to the customer? This cannot be undone.`,
        action: 'Refund all',
      });
      this.busy.set(false);
      if (!confirmed) return;
    }
    this.busy.set(true);
    this.refundError.set('');
    try {
      const refund = await this.session.api(
        PaymentService.method.createRefund,
        { paymentId: payment.id, amount, reason: this.refundReason },
        { idempotencyKey: this.refundKey.get() },
      );
      this.refundKey.reset();
      this.refundAmount = '';
      this.refundNotice.set(`Refund ${refund.id} is ${refund.status}.`);
      await this.load();
    } catch (error) {
      this.refundError.set(describeError(error));
    } finally {
      this.busy.set(false);
    }
  }
}
