import { Component, inject, input, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { MatSelectModule } from '@angular/material/select';

import { Confirm } from './confirm';
import { MoneyPipe } from './format';
import { IdempotencyKey } from './idempotency';
import { formatMoney, parseMajor } from './money';
import { describeError } from './rest';

/** What a refund asks of the API: no amount means all that is left (never 0). */
export interface RefundRequest {
  paymentId: string;
  amount: bigint | undefined;
  reason: string;
  idempotencyKey: string;
}

/** Sends a refund and answers the line to show, e.g. "Refund re_… is pending." */
export type SendRefund = (request: RefundRequest) => Promise<string>;

/**
 * The refund form of a payment's page, for operators and merchants alike: an amount (empty is
 * all that is left, asked first), a reason, and one Idempotency-Key per refund meant, kept while
 * the same refund is retried, so a double click or a lost answer refunds once.
 */
@Component({
  selector: 'pm-refund-form',
  imports: [FormsModule, MatButtonModule, MatFormFieldModule, MatInputModule, MatSelectModule, MoneyPipe],
  template: `
    <section class="panel" aria-labelledby="refund-title" data-testid="refund-panel">
      <h2 id="refund-title">Refund</h2>
      <form class="refund-form" (ngSubmit)="submit()">
        <mat-form-field appearance="outline" subscriptSizing="dynamic">
          <mat-label>Amount ({{ currency() }})</mat-label>
          <input matInput name="amount" [(ngModel)]="amount" (ngModelChange)="key.reset()" placeholder="All that is left" inputmode="decimal" data-testid="refund-amount">
        </mat-form-field>
        <mat-form-field appearance="outline" subscriptSizing="dynamic">
          <mat-label>Reason</mat-label>
          <mat-select name="reason" [(ngModel)]="reason" (ngModelChange)="key.reset()">
            <mat-option value="requested_by_customer">Requested by customer</mat-option>
            <mat-option value="duplicate">Duplicate</mat-option>
            <mat-option value="fraudulent">Fraudulent</mat-option>
          </mat-select>
        </mat-form-field>
        <button mat-flat-button type="submit" [disabled]="busy()" data-testid="refund">Refund</button>
        <span class="muted">Up to {{ refundable() | money: currency() }}</span>
      </form>
      @if (error()) { <p class="error-text" role="alert">{{ error() }}</p> }
      @if (notice()) { <p role="status" data-testid="refund-notice">{{ notice() }}</p> }
    </section>
  `,
  styles: `.refund-form { display: flex; flex-wrap: wrap; gap: 0.75rem; align-items: center; }`,
})
export class RefundForm {
  private readonly confirm = inject(Confirm);
  readonly paymentId = input.required<string>();
  readonly currency = input.required<string>();
  /** What is left to refund, in minor units. */
  readonly refundable = input.required<bigint>();
  readonly send = input.required<SendRefund>();
  readonly busy = signal(false);
  readonly error = signal('');
  readonly notice = signal('');
  amount = '';
  reason = 'requested_by_customer';
  readonly key = new IdempotencyKey();

  async submit(): Promise<void> {
    if (this.busy()) return;
    const currency = this.currency();
    // A typed amount is sent as it is; an empty field means all that is left, which is sent as
    // no amount at all (never 0) and only once the user has confirmed it.
    let amount: bigint | undefined;
    if (this.amount.trim()) {
      const parsed = parseMajor(this.amount, currency);
      if (parsed === null || parsed <= 0n || parsed > this.refundable()) {
        this.error.set('Enter an amount up to what is left to refund.');
        return;
      }
      amount = parsed;
    } else {
      this.busy.set(true);
      const confirmed = await this.confirm.ask({
        title: 'Refund the full remaining amount?',
        message: `Refund ${formatMoney(this.refundable(), currency)}, all that is left of ${this.paymentId()}, to the customer? This cannot be undone.`,
        action: 'Refund all',
      });
      this.busy.set(false);
      if (!confirmed) return;
    }
    this.busy.set(true);
    this.error.set('');
    try {
      this.notice.set(
        await this.send()({ paymentId: this.paymentId(), amount, reason: this.reason, idempotencyKey: this.key.get() }),
      );
      this.key.reset();
      this.amount = '';
    } catch (error) {
      this.error.set(describeError(error));
    } finally {
      this.busy.set(false);
    }
  }
}
