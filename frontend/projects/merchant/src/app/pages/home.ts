import { Component, OnInit, inject, signal } from '@angular/core';
import { RouterLink } from '@angular/router';

import type { BalanceAmount } from '@gen/paymesh/ledger/v1/ledger_pb';
import { LedgerService } from '@gen/paymesh/ledger/v1/ledger_pb';
import { PaymentService, type Payment } from '@gen/paymesh/payment/v1/payment_pb';
import { MoneyPipe } from '@shared/format';
import { describeError } from '@shared/rest';
import { timestampFromDate } from '@shared/time';
import { startOfDay, volumeByCurrency, type Volume } from '../figures';
import { Session } from '../session';

/** Today's payments are read in pages of this size, at most this many pages. */
const PAGE_SIZE = 100;
const PAGES_MAX = 10;

/** Home: the balance per currency and today's volume, in the current mode. */
@Component({
  selector: 'pm-home-page',
  imports: [RouterLink, MoneyPipe],
  template: `
    <h1 class="page-title">Home</h1>
    @if (error()) { <p class="error-text" role="alert">{{ error() }}</p> }
    <section class="panel" aria-labelledby="balance-title">
      <h2 id="balance-title">Balance</h2>
      <div class="figures" data-testid="balances">
        @for (b of balances(); track b.currency) {
          <div class="figure" [attr.data-testid]="'balance-' + b.currency">
            <span class="label">{{ b.currency }} available</span>
            <span class="value" [class.error-text]="isNegative(b.available)">{{ b.available | money: b.currency }}</span>
          </div>
        } @empty {
          @if (!loading()) { <p class="muted">No balance yet: it starts with the first captured payment.</p> }
        }
      </div>
      <p><a routerLink="/balance">Balance entries →</a></p>
    </section>
    <section class="panel" aria-labelledby="today-title">
      <h2 id="today-title">Today</h2>
      <div class="figures" data-testid="today">
        @for (v of today(); track v.currency) {
          <div class="figure" [attr.data-testid]="'today-' + v.currency">
            <span class="label">{{ v.currency }} volume</span>
            <span class="value">{{ v.received | money: v.currency }}</span>
            <span class="muted">{{ v.succeeded }} succeeded of {{ v.count }} payments</span>
          </div>
        } @empty {
          @if (!loading()) { <p class="muted">No payments today.</p> }
        }
      </div>
      @if (truncated()) {
        <p class="muted">Counted from the newest {{ pagesMax * pageSize }} payments of today only.</p>
      }
      <p><a routerLink="/payments">Payments →</a></p>
    </section>
  `,
  styles: `
    .figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 1rem; margin-bottom: 0.5rem; }
    .figure { display: flex; flex-direction: column; gap: 0.2rem; padding: 0.75rem 1rem; border: 1px solid #e1e4ea; border-radius: 8px; }
    .label { font-size: 0.85rem; color: #545b69; }
    .value { font-size: 1.5rem; font-weight: 500; }
  `,
})
export class HomePage implements OnInit {
  private readonly session = inject(Session);
  readonly balances = signal<BalanceAmount[]>([]);
  readonly today = signal<Volume[]>([]);
  readonly truncated = signal(false);
  readonly loading = signal(true);
  readonly error = signal('');
  readonly pageSize = PAGE_SIZE;
  readonly pagesMax = PAGES_MAX;

  ngOnInit(): void {
    void this.load();
  }

  /** A negative balance: the merchant owes the platform (refunds and fees beyond its funds). */
  isNegative(amount: bigint): boolean {
    return amount < 0n;
  }

  private async load(): Promise<void> {
    try {
      const [balance, payments] = await Promise.all([
        this.session.api(LedgerService.method.getBalance, {}),
        this.todaysPayments(),
      ]);
      this.balances.set([...balance.available].sort((a, b) => a.currency.localeCompare(b.currency)));
      this.today.set(volumeByCurrency(payments));
    } catch (error) {
      this.error.set(describeError(error));
    } finally {
      this.loading.set(false);
    }
  }

  private async todaysPayments(): Promise<Payment[]> {
    const createdGte = timestampFromDate(startOfDay(new Date()));
    const payments: Payment[] = [];
    let pageToken = '';
    for (let page = 0; page < PAGES_MAX; page++) {
      const response = await this.session.api(PaymentService.method.listPayments, { pageSize: PAGE_SIZE, pageToken, createdGte });
      payments.push(...response.payments);
      pageToken = response.nextPageToken;
      if (!pageToken) return payments;
    }
    this.truncated.set(true);
    return payments;
  }
}
