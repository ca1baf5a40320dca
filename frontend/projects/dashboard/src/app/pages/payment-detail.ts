import { Component, OnInit, computed, inject, input, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { MatSelectModule } from '@angular/material/select';
import { MatTableModule } from '@angular/material/table';
import { RouterLink } from '@angular/router';

import { AdminService, type PaymentDetail } from '@gen/paymesh/admin/v1/admin_pb';
import { formatMoney, parseMajor } from '@shared/money';
import { Confirm } from '@shared/confirm';
import { MoneyPipe, TimePipe } from '@shared/format';
import { Session, describeError } from '../session';

/** One payment: summary, timeline of events, ledger entries, refunds, and the refund action. */
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
    .refund-form { display: flex; flex-wrap: wrap; gap: 0.75rem; align-items: center; }
    .num { text-align: right; }
  `,
})
export class PaymentDetailPage implements OnInit {
  readonly id = input.required<string>();
  readonly session = inject(Session);
  private readonly confirm = inject(Confirm);
  readonly detail = signal<PaymentDetail | null>(null);
  readonly error = signal('');
  readonly refundError = signal('');
  readonly refundNotice = signal('');
  readonly busy = signal(false);
  readonly refundable = computed(() => {
    const p = this.detail()?.payment;
    return p ? p.amountReceived - p.amountRefunded : 0n;
  });
  /** Operators may refund what a succeeded payment has left; viewers never see the form. */
  readonly canRefund = computed(
    () => this.session.canMutate() && this.detail()?.payment?.status === 'succeeded' && this.refundable() > 0n,
  );
  readonly entryColumns = ['time', 'account', 'direction', 'amount', 'transaction'];
  readonly refundColumns = ['id', 'amount', 'status', 'reason', 'created'];

  refundAmount = '';
  refundReason = 'requested_by_customer';
  /** One key per refund the operator means to make, so a double click refunds once. */
  private refundKey: string | null = null;

  ngOnInit(): void {
    void this.load();
  }

  async load(): Promise<void> {
    try {
      this.detail.set(await this.session.api(AdminService.method.getPaymentDetail, { id: this.id() }));
      this.error.set('');
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  resetRefundKey(): void {
    this.refundKey = null;
  }

  async refund(): Promise<void> {
    const payment = this.detail()?.payment;
    if (!payment || this.busy()) return;
    // An amount the operator typed is sent as it is; an empty field means all that is left,
    // which is sent as no amount at all (never 0) and only once the operator has confirmed it.
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
    this.refundKey ??= crypto.randomUUID();
    try {
      const refund = await this.session.api(AdminService.method.refundPayment, {
        paymentId: payment.id,
        amount,
        reason: this.refundReason,
        idempotencyKey: this.refundKey,
      });
      this.refundKey = null;
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
