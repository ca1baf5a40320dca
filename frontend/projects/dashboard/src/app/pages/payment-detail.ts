import { Component, OnInit, computed, inject, input, signal } from '@angular/core';
import { MatTableModule } from '@angular/material/table';
import { RouterLink } from '@angular/router';

import { AdminService, type PaymentDetail } from '@gen/paymesh/admin/v1/admin_pb';
import type { Dispute } from '@gen/paymesh/payment/v1/payment_pb';
import { MoneyPipe, TimePipe } from '@shared/format';
import { RefundForm, type RefundRequest } from '@shared/refund-form';
import { Session, describeError } from '../session';

/** One payment: summary, timeline of events, ledger entries, refunds, and the refund action. */
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
  `,
})
export class PaymentDetailPage implements OnInit {
  readonly id = input.required<string>();
  readonly session = inject(Session);
  readonly detail = signal<PaymentDetail | null>(null);
  /** The payment's dispute, when it has one. */
  readonly dispute = signal<Dispute | null>(null);
  readonly error = signal('');
  readonly refundable = computed(() => {
    const p = this.detail()?.payment;
    return p ? p.amountReceived - p.amountRefunded : 0n;
  });
  /**
   * Operators may refund what a succeeded payment has left, unless a chargeback disputes it (the
   * dispute settles its money and the server refuses the refund; an inquiry's payment may still
   * be refunded); viewers never see the form.
   */
  readonly canRefund = computed(() => {
    const p = this.detail()?.payment;
    const refundableDespiteDispute = !p?.dispute || this.dispute()?.isChargeRefundable === true;
    return this.session.canMutate() && p?.status === 'succeeded' && refundableDespiteDispute && this.refundable() > 0n;
  });
  readonly entryColumns = ['time', 'account', 'direction', 'amount', 'transaction'];
  readonly refundColumns = ['id', 'amount', 'status', 'reason', 'created'];

  ngOnInit(): void {
    void this.load();
  }

  async load(): Promise<void> {
    try {
      const detail = await this.session.api(AdminService.method.getPaymentDetail, { id: this.id() });
      this.dispute.set(detail.payment?.dispute ? await this.disputeOf(detail.payment.id) : null);
      this.detail.set(detail);
      this.error.set('');
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  private async disputeOf(paymentId: string): Promise<Dispute | null> {
    const found = await this.session.api(AdminService.method.searchDisputes, { paymentId, pageSize: 1 });
    return found.disputes[0] ?? null;
  }

  /** The refund form's call: the admin refund, then the page again. */
  readonly sendRefund = async (request: RefundRequest): Promise<string> => {
    const refund = await this.session.api(AdminService.method.refundPayment, {
      paymentId: request.paymentId,
      amount: request.amount,
      reason: request.reason,
      idempotencyKey: request.idempotencyKey,
    });
    await this.load();
    return `Refund ${refund.id} is ${refund.status}.`;
  };
}
