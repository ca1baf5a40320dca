import { Component, OnInit, inject, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { MatSlideToggleModule } from '@angular/material/slide-toggle';

import { AdminService } from '@gen/paymesh/admin/v1/admin_pb';
import type { Delivery, DeliveryAttempt } from '@gen/paymesh/webhook/v1/webhook_internal_pb';
import { Confirm } from '@shared/confirm';
import { TimePipe } from '@shared/format';
import { Session, describeError } from '../session';

const PAGE_SIZE = 50;
/** The most deliveries one bulk replay re-sends. */
const BULK_LIMIT = 500;

/** Dead (and optionally retrying) deliveries, with replay per row, bulk replay and attempt logs. */
@Component({
  selector: 'pm-webhooks-page',
  imports: [FormsModule, MatButtonModule, MatFormFieldModule, MatInputModule, MatSlideToggleModule, TimePipe],
  templateUrl: './webhooks.html',
  styles: `
    table { width: 100%; border-collapse: collapse; }
    th, td { text-align: left; padding: 0.5rem; border-bottom: 1px solid #e6e8ee; vertical-align: top; font-size: 0.9rem; }
    th { font-weight: 500; color: #545b69; }
    .attempts td { background: #f8f9fc; }
    .attempts table th, .attempts table td { border: none; padding: 0.25rem 0.5rem; }
    .body { max-width: 28rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
    .actions { white-space: nowrap; }
  `,
})
export class WebhooksPage implements OnInit {
  readonly session = inject(Session);
  private readonly confirm = inject(Confirm);
  readonly deliveries = signal<Delivery[]>([]);
  readonly attempts = signal<Partial<Record<string, DeliveryAttempt[]>>>({});
  readonly open = signal<string | null>(null);
  readonly error = signal('');
  readonly notice = signal('');
  readonly replaying = signal<Set<string>>(new Set());
  readonly bulkBusy = signal(false);
  readonly nextToken = signal('');
  includeFailing = false;
  merchantId = '';
  /** The merchant filter of the list shown, which the input may no longer match. */
  private listedMerchantId = '';

  ngOnInit(): void {
    void this.load();
  }

  async load(pageToken = ''): Promise<void> {
    const merchantId = this.merchantId.trim();
    try {
      const response = await this.session.api(AdminService.method.listFailedWebhooks, {
        merchantId,
        includeFailing: this.includeFailing,
        pageSize: PAGE_SIZE,
        pageToken,
      });
      // A page token is bound to its list's filters, so later pages never mix merchants.
      if (!pageToken) this.listedMerchantId = merchantId;
      this.deliveries.update((current) => (pageToken ? [...current, ...response.deliveries] : response.deliveries));
      this.nextToken.set(response.nextPageToken);
      this.error.set('');
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  attemptsOf(deliveryId: string): DeliveryAttempt[] {
    return this.attempts()[deliveryId] ?? [];
  }

  async toggleAttempts(delivery: Delivery): Promise<void> {
    if (this.open() === delivery.id) {
      this.open.set(null);
      return;
    }
    this.open.set(delivery.id);
    try {
      const response = await this.session.api(AdminService.method.listDeliveryAttempts, { deliveryId: delivery.id });
      this.attempts.update((all) => ({ ...all, [delivery.id]: response.attempts }));
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  async replay(delivery: Delivery): Promise<void> {
    if (this.replaying().has(delivery.id)) return;
    this.replaying.update((s) => new Set(s).add(delivery.id));
    try {
      const replayed = await this.session.api(AdminService.method.replayWebhook, { jobId: delivery.jobId || delivery.id });
      this.notice.set(`Delivery ${delivery.id} replayed: now ${replayed.status}.`);
      await this.load();
    } catch (error) {
      this.error.set(describeError(error));
    } finally {
      this.replaying.update((s) => {
        const next = new Set(s);
        next.delete(delivery.id);
        return next;
      });
    }
  }

  async replayAll(): Promise<void> {
    if (this.bulkBusy()) return;
    const merchantId = this.merchantId.trim();
    // The count is exact only when the list is all loaded and for the merchant typed (one typed
    // without Enter has not been listed yet); otherwise only the bound is known.
    const dead = this.deliveries().filter((d) => d.status === 'dead').length;
    const exact = !this.nextToken() && this.listedMerchantId === merchantId;
    const count = exact ? String(Math.min(dead, BULK_LIMIT)) : `up to ${BULK_LIMIT}`;
    const whose = merchantId ? `of merchant ${merchantId}` : 'across ALL merchants';
    this.bulkBusy.set(true);
    const confirmed = await this.confirm.ask({
      title: 'Replay dead deliveries?',
      message: `Send ${count} dead webhook deliveries ${whose} again, each to its endpoint? Receivers see the same event ids again.`,
      action: `Replay ${count}`,
    });
    if (!confirmed) {
      this.bulkBusy.set(false);
      return;
    }
    try {
      const response = await this.session.api(AdminService.method.replayWebhooks, {
        merchantId,
        limit: BULK_LIMIT,
      });
      this.notice.set(`${response.deliveryIds.length} deliveries replayed.`);
      await this.load();
    } catch (error) {
      this.error.set(describeError(error));
    } finally {
      this.bulkBusy.set(false);
    }
  }
}
