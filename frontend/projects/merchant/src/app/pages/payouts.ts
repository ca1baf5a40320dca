import { Component, OnDestroy, OnInit, computed, inject, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { MatSelectModule } from '@angular/material/select';
import { MatTableModule } from '@angular/material/table';

import { LedgerService, type BalanceAmount } from '@gen/paymesh/ledger/v1/ledger_pb';
import { PaymentService, type Payout, type PayoutSettings } from '@gen/paymesh/payment/v1/payment_pb';
import { Actions } from '@shared/actions';
import { MoneyPipe, TimePipe } from '@shared/format';
import { IdempotencyKey } from '@shared/idempotency';
import { formatMoney, parseMajor } from '@shared/money';
import { Pager, PagerBar } from '@shared/pager';
import { ApiError, describeError } from '@shared/rest';
import { Session } from '../session';

const PAGE_SIZE = 25;
/** While a payout is on its way, the page reads the list and the balance again this often. */
const POLL_MS = 1500;
/** Statuses a payout leaves by itself. */
const MOVING = new Set(['pending', 'in_transit']);

/** The API's message with its code (`no_bank_account`, `insufficient_available_balance`). */
function withCode(error: unknown): string {
  const text = describeError(error);
  return error instanceof ApiError && error.code && error.status !== 403 && !text.includes(error.code)
    ? `${text} (${error.code})`
    : text;
}

/**
 * The balance per currency (available, pending), the payouts to the bank with their outcome, a
 * "Pay out" form, and the payout settings (bank account, schedule); admins change them.
 */
@Component({
  selector: 'pm-payouts-page',
  imports: [FormsModule, MatTableModule, MatFormFieldModule, MatInputModule, MatSelectModule, MatButtonModule, MoneyPipe, TimePipe, PagerBar],
  template: `
    <h1 class="page-title">Payouts</h1>
    @if (error()) { <p class="error-text" role="alert" data-testid="payouts-error">{{ error() }}</p> }

    <section class="panel table-wrap" aria-labelledby="balance-title">
      <h2 id="balance-title">Balance</h2>
      @if (balances().length) {
        <table class="balances" data-testid="payout-balances">
          <thead><tr><th scope="col">Currency</th><th scope="col" class="num">Available</th><th scope="col" class="num">Pending</th></tr></thead>
          <tbody>
            @for (b of balances(); track b.currency) {
              <tr [attr.data-testid]="'balance-' + b.currency">
                <td>{{ b.currency }}</td>
                <td class="num" data-testid="available" [class.error-text]="b.available < zero">{{ b.available | money: b.currency }}</td>
                <td class="num" data-testid="pending">{{ b.pending | money: b.currency }}</td>
              </tr>
            }
          </tbody>
        </table>
      } @else {
        <p class="muted" data-testid="no-balance">No funds yet.</p>
      }
    </section>

    @if (session.isAdmin()) {
      <section class="panel" aria-labelledby="payout-title" data-testid="payout-panel">
        <h2 id="payout-title">Pay out</h2>
        <form class="row" (ngSubmit)="payOut()">
          <mat-form-field appearance="outline" subscriptSizing="dynamic">
            <mat-label>Amount ({{ currency }})</mat-label>
            <input matInput name="amount" [(ngModel)]="amount" (ngModelChange)="payoutKey.reset()" inputmode="decimal" data-testid="payout-amount">
          </mat-form-field>
          <mat-form-field appearance="outline" subscriptSizing="dynamic">
            <mat-label>Currency</mat-label>
            <mat-select name="currency" [(ngModel)]="currency" (ngModelChange)="payoutKey.reset()" data-testid="payout-currency">
              @for (c of currencies(); track c) { <mat-option [value]="c">{{ c }}</mat-option> }
            </mat-select>
          </mat-form-field>
          <button mat-flat-button type="submit" [disabled]="payout.busy() || !currency" data-testid="pay-out">Pay out</button>
          @if (availableIn(currency); as b) { <span class="muted">{{ b.available | money: b.currency }} available</span> }
        </form>
        @if (payout.error()) { <p class="error-text" role="alert" data-testid="payout-error">{{ payout.error() }}</p> }
        @if (payout.notice()) { <p role="status" data-testid="payout-notice">{{ payout.notice() }}</p> }
      </section>
    }

    <div class="panel table-wrap" tabindex="0" role="region" aria-label="Payouts">
      <table mat-table [dataSource]="payouts()" data-testid="payouts-table">
        <ng-container matColumnDef="id">
          <th mat-header-cell *matHeaderCellDef>Payout</th>
          <td mat-cell *matCellDef="let p" class="mono">{{ p.id }}</td>
        </ng-container>
        <ng-container matColumnDef="amount">
          <th mat-header-cell *matHeaderCellDef class="num">Amount</th>
          <td mat-cell *matCellDef="let p" class="num" data-testid="payout-row-amount">{{ p.amount | money: p.currency }}</td>
        </ng-container>
        <ng-container matColumnDef="status">
          <th mat-header-cell *matHeaderCellDef>Status</th>
          <td mat-cell *matCellDef="let p">
            <span class="status-chip" [class]="p.status" data-testid="payout-status">{{ p.status }}</span>
            @if (p.failureCode) { <span class="error-text" data-testid="payout-failure"> {{ p.failureCode }}</span> }
          </td>
        </ng-container>
        <ng-container matColumnDef="method">
          <th mat-header-cell *matHeaderCellDef>Method</th>
          <td mat-cell *matCellDef="let p">{{ p.method }}</td>
        </ng-container>
        <ng-container matColumnDef="bank">
          <th mat-header-cell *matHeaderCellDef>Bank account</th>
          <td mat-cell *matCellDef="let p" data-testid="payout-bank">@if (p.bankAccountLast4) { ••••&nbsp;{{ p.bankAccountLast4 }} }</td>
        </ng-container>
        <ng-container matColumnDef="created">
          <th mat-header-cell *matHeaderCellDef>Created</th>
          <td mat-cell *matCellDef="let p" class="when">{{ p.createTime | time }}</td>
        </ng-container>
        <ng-container matColumnDef="finished">
          <th mat-header-cell *matHeaderCellDef>Finished</th>
          <td mat-cell *matCellDef="let p" class="when">{{ p.finishTime | time }}</td>
        </ng-container>
        <tr mat-header-row *matHeaderRowDef="columns"></tr>
        <tr mat-row *matRowDef="let row; columns: columns" [attr.data-testid]="'payout-row-' + row.id"></tr>
      </table>
      @if (!loading() && payouts().length === 0) { <p class="empty" data-testid="payouts-empty">No payouts yet.</p> }
      <pm-pager [pager]="pager" (moved)="loadPayouts()" />
    </div>

    <section class="panel" aria-labelledby="settings-title" data-testid="payout-settings">
      <h2 id="settings-title">Payout settings</h2>
      @if (settings(); as s) {
        <dl class="summary">
          <div><dt>Bank account</dt><dd data-testid="settings-bank">{{ s.bankAccountLast4 ? '•••• ' + s.bankAccountLast4 : 'None yet' }}</dd></div>
          <div><dt>Schedule</dt><dd data-testid="settings-schedule">{{ s.schedule }}</dd></div>
          <div><dt>Settlement delay</dt><dd>{{ s.settlementDelayS }} s</dd></div>
        </dl>
      }
      @if (session.isAdmin()) {
        <form class="row" (ngSubmit)="saveSettings()">
          <mat-form-field appearance="outline" subscriptSizing="dynamic" class="account">
            <mat-label>New bank account number</mat-label>
            <input matInput name="bankAccountNumber" [(ngModel)]="bankAccountNumber" inputmode="numeric" autocomplete="off" placeholder="Leave empty to keep" data-testid="settings-account">
          </mat-form-field>
          <mat-form-field appearance="outline" subscriptSizing="dynamic">
            <mat-label>Schedule</mat-label>
            <mat-select name="schedule" [(ngModel)]="schedule" data-testid="settings-schedule-select">
              <mat-option value="manual">manual</mat-option>
              <mat-option value="automatic">automatic</mat-option>
            </mat-select>
          </mat-form-field>
          <button mat-stroked-button type="submit" [disabled]="settingsActions.busy()" data-testid="save-settings">Save settings</button>
        </form>
        @if (settingsActions.error()) { <p class="error-text" role="alert" data-testid="settings-error">{{ settingsActions.error() }}</p> }
        @if (settingsActions.notice()) { <p role="status" data-testid="settings-notice">{{ settingsActions.notice() }}</p> }
      }
    </section>
  `,
  styles: `
    .balances { border-collapse: collapse; min-width: 320px; }
    .balances th, .balances td { padding: 0.35rem 1.5rem 0.35rem 0; }
    .balances th:not(.num) { text-align: left; }
    .account { width: 18rem; }
    .row { display: flex; flex-wrap: wrap; gap: 0.75rem; align-items: center; }
    .summary { display: flex; flex-wrap: wrap; gap: 0.75rem 2rem; margin: 0 0 1rem; }
    .summary dt { font-size: 0.8rem; color: #545b69; } .summary dd { margin: 0; }
  `,
})
export class PayoutsPage implements OnInit, OnDestroy {
  readonly session = inject(Session);
  readonly columns = ['id', 'amount', 'status', 'method', 'bank', 'created', 'finished'];
  /** Templates have no bigint literals. */
  readonly zero = 0n;

  readonly balances = signal<BalanceAmount[]>([]);
  readonly currencies = computed(() => this.balances().map((b) => b.currency));
  readonly payouts = signal<Payout[]>([]);
  readonly settings = signal<PayoutSettings | null>(null);
  readonly loading = signal(false);
  readonly error = signal('');
  readonly pager = new Pager();

  amount = '';
  currency = '';
  readonly payoutKey = new IdempotencyKey();
  readonly payout = new Actions();

  bankAccountNumber = '';
  schedule = 'manual';
  readonly settingsActions = new Actions();

  private pollTimer: ReturnType<typeof setTimeout> | undefined;

  ngOnInit(): void {
    void this.loadBalance();
    void this.loadPayouts();
    void this.loadSettings();
  }

  ngOnDestroy(): void {
    clearTimeout(this.pollTimer);
  }

  availableIn(currency: string): BalanceAmount | undefined {
    return this.balances().find((b) => b.currency === currency);
  }

  async loadBalance(): Promise<void> {
    try {
      const balance = await this.session.api(LedgerService.method.getBalance, {});
      this.balances.set(balance.available);
      if (!this.currency || !this.currencies().includes(this.currency)) {
        this.currency = balance.available[0]?.currency ?? '';
      }
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  async loadPayouts(): Promise<void> {
    clearTimeout(this.pollTimer);
    this.loading.set(true);
    try {
      const response = await this.session.api(PaymentService.method.listPayouts, {
        pageSize: PAGE_SIZE,
        pageToken: this.pager.current(),
      });
      this.payouts.set(response.payouts);
      this.pager.nextToken.set(response.nextPageToken);
      this.error.set('');
      // A payout on its way reaches paid or failed by itself (seconds in test mode): follow it,
      // and the balance a failed one gives back.
      if (response.payouts.some((p) => MOVING.has(p.status))) {
        this.pollTimer = setTimeout(() => {
          void this.loadPayouts();
          void this.loadBalance();
        }, POLL_MS);
      }
    } catch (error) {
      this.error.set(describeError(error));
    } finally {
      this.loading.set(false);
    }
  }

  async loadSettings(): Promise<void> {
    try {
      const settings = await this.session.api(PaymentService.method.getPayoutSettings, {});
      this.settings.set(settings);
      this.schedule = settings.schedule || 'manual';
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  /** Sends the amount to the bank; the API's refusal (no bank account, too much) is shown. */
  payOut(): Promise<void> {
    return this.payout.run(async () => {
      const currency = this.currency;
      const amount = parseMajor(this.amount, currency);
      if (amount === null || amount <= 0n) {
        throw new Error(`Enter an amount in ${currency}, such as 10.00.`);
      }
      const created = await this.session
        .api(PaymentService.method.createPayout, { amount, currency }, { idempotencyKey: this.payoutKey.get() })
        .catch((error: unknown) => {
          throw new Error(withCode(error));
        });
      this.payoutKey.reset();
      this.amount = '';
      this.payout.notice.set(`Payout ${created.id} of ${formatMoney(created.amount, created.currency)} is ${created.status}.`);
      this.pager.reset();
      await Promise.all([this.loadPayouts(), this.loadBalance()]);
    });
  }

  /** Saves a new bank account (when typed) and the schedule. */
  saveSettings(): Promise<void> {
    return this.settingsActions.run(async () => {
      const account = this.bankAccountNumber.replace(/\s+/g, '');
      const settings = await this.session
        .api(PaymentService.method.updatePayoutSettings, {
          ...(account ? { bankAccountNumber: account } : {}),
          schedule: this.schedule,
        })
        .catch((error: unknown) => {
          throw new Error(withCode(error));
        });
      this.settings.set(settings);
      this.bankAccountNumber = '';
      this.settingsActions.notice.set('Payout settings saved.');
    });
  }
}
