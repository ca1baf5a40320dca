import { Component, OnInit, computed, inject, input, signal } from '@angular/core';
import { MatTableModule } from '@angular/material/table';
import { RouterLink } from '@angular/router';
import type { Timestamp } from '@bufbuild/protobuf/wkt';

import { LedgerService, type Entry } from '@gen/paymesh/ledger/v1/ledger_pb';
import { PaymentService, type Dispute, type Payment, type Refund } from '@gen/paymesh/payment/v1/payment_pb';
import { WebhookService, type Event, type WebhookDelivery } from '@gen/paymesh/webhook/v1/webhook_pb';
import { MoneyPipe, TimePipe } from '@shared/format';
import { formatMoney } from '@shared/money';
import { RefundForm, type RefundRequest } from '@shared/refund-form';
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
  imports: [RouterLink, MatTableModule, MoneyPipe, TimePipe, RefundForm],
  templateUrl: './payment-detail.html',
  styles: `
    .summary { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 0.75rem 1.5rem; margin: 0; }
    .summary dt { font-size: 0.8rem; color: #545b69; } .summary dd { margin: 0; }
    .timeline { list-style: none; margin: 0; padding: 0; border-left: 2px solid #c9d2e3; }
    .timeline li { position: relative; padding: 0 0 0.75rem 1rem; }
    .timeline li::before { content: ''; position: absolute; left: -6px; top: 4px; width: 10px; height: 10px; border-radius: 50%; background: #2f6fdb; }
    .timeline li.delivery::before { background: #7a5cd6; } .timeline li.ledger::before { background: #2e9d55; } .timeline li.refund::before { background: #d97706; }
  `,
})
export class PaymentDetailPage implements OnInit {
  readonly id = input.required<string>();
  readonly session = inject(Session);
  readonly payment = signal<Payment | null>(null);
  /** The payment's dispute, when it has one. */
  readonly dispute = signal<Dispute | null>(null);
  readonly refunds = signal<Refund[]>([]);
  readonly events = signal<Event[]>([]);
  readonly deliveries = signal<WebhookDelivery[]>([]);
  readonly entries = signal<Entry[]>([]);
  /** Some list was longer than its bound: the timeline may miss its oldest items. */
  readonly partial = signal(false);
  readonly error = signal('');
  readonly refundable = computed(() => {
    const p = this.payment();
    return p ? p.amountReceived - p.amountRefunded : 0n;
  });
  /**
   * Admins may refund what a succeeded payment has left, unless a chargeback disputes it (the
   * dispute settles its money and the server answers charge_disputed; an inquiry's payment may
   * still be refunded); no one else sees the form.
   */
  readonly canRefund = computed(() => {
    const p = this.payment();
    const refundableDespiteDispute = !p?.dispute || this.dispute()?.isChargeRefundable === true;
    return this.session.isAdmin() && p?.status === 'succeeded' && refundableDespiteDispute && this.refundable() > 0n;
  });
  readonly timeline = computed(() => this.buildTimeline());
  readonly entryColumns = ['time', 'account', 'direction', 'amount', 'source'];
  readonly refundColumns = ['id', 'amount', 'status', 'reason', 'created'];

  ngOnInit(): void {
    void this.load();
  }

  async load(): Promise<void> {
    try {
      const payment = await this.session.api(PaymentService.method.getPayment, { id: this.id() });
      this.dispute.set(payment.dispute ? await this.disputeOf(payment.id) : null);
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

  private async disputeOf(paymentId: string): Promise<Dispute | null> {
    const found = await this.session.api(PaymentService.method.listDisputes, { paymentId, pageSize: 1 });
    return found.disputes[0] ?? null;
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

  /** The refund form's call: the merchant's refund, then the page again. */
  readonly sendRefund = async (request: RefundRequest): Promise<string> => {
    const refund = await this.session.api(
      PaymentService.method.createRefund,
      { paymentId: request.paymentId, amount: request.amount, reason: request.reason },
      { idempotencyKey: request.idempotencyKey },
    );
    await this.load();
    return `Refund ${refund.id} is ${refund.status}.`;
  };
}
