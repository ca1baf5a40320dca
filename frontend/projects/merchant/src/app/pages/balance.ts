import { Component, OnInit, inject, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { MatTableModule } from '@angular/material/table';
import { RouterLink } from '@angular/router';

import { LedgerService, type BalanceAmount, type Entry } from '@gen/paymesh/ledger/v1/ledger_pb';
import { MoneyPipe, TimePipe } from '@shared/format';
import { Pager, PagerBar } from '@shared/pager';
import { describeError } from '@shared/rest';
import { timestampFromDate } from '@shared/time';
import { dayRange } from '../figures';
import { Session } from '../session';

const PAGE_SIZE = 50;

/** The balance per currency and the ledger entries behind it, by date, page by page. */
@Component({
  selector: 'pm-balance-page',
  imports: [FormsModule, RouterLink, MatTableModule, MatFormFieldModule, MatInputModule, MatButtonModule, MoneyPipe, TimePipe, PagerBar],
  template: `
    <h1 class="page-title">Balance</h1>
    @if (error()) { <p class="error-text" role="alert">{{ error() }}</p> }
    <p class="balances" data-testid="balance-summary">
      @for (b of balances(); track b.currency) {
        <span class="status-chip">{{ b.available | money: b.currency }} available · {{ b.pending | money: b.currency }} pending</span>
      }
    </p>
    <form class="toolbar-row filters" (ngSubmit)="search()">
      <mat-form-field appearance="outline" subscriptSizing="dynamic">
        <mat-label>From</mat-label>
        <input matInput type="date" name="from" [(ngModel)]="from">
      </mat-form-field>
      <mat-form-field appearance="outline" subscriptSizing="dynamic">
        <mat-label>To</mat-label>
        <input matInput type="date" name="to" [(ngModel)]="to">
      </mat-form-field>
      <button mat-flat-button type="submit">Filter</button>
    </form>
    <div class="panel table-wrap" tabindex="0" role="region" aria-label="Balance entries">
      <table mat-table [dataSource]="entries()" data-testid="balance-entries">
        <ng-container matColumnDef="time"><th mat-header-cell *matHeaderCellDef>Time</th><td mat-cell *matCellDef="let e">{{ e.createTime | time }}</td></ng-container>
        <ng-container matColumnDef="source">
          <th mat-header-cell *matHeaderCellDef>Source</th>
          <td mat-cell *matCellDef="let e" class="mono">
            @if (e.sourceId.startsWith('pay_')) { <a [routerLink]="['/payments', e.sourceId]">{{ e.sourceId }}</a> } @else { {{ e.sourceId }} }
          </td>
        </ng-container>
        <ng-container matColumnDef="account"><th mat-header-cell *matHeaderCellDef>Account</th><td mat-cell *matCellDef="let e" class="mono">{{ e.accountId }}</td></ng-container>
        <ng-container matColumnDef="direction"><th mat-header-cell *matHeaderCellDef>Direction</th><td mat-cell *matCellDef="let e">{{ e.direction }}</td></ng-container>
        <ng-container matColumnDef="amount"><th mat-header-cell *matHeaderCellDef class="num">Amount</th><td mat-cell *matCellDef="let e" class="num">{{ e.amount | money: e.currency }}</td></ng-container>
        <ng-container matColumnDef="transaction"><th mat-header-cell *matHeaderCellDef>Transaction</th><td mat-cell *matCellDef="let e" class="mono">{{ e.transactionId }}</td></ng-container>
        <tr mat-header-row *matHeaderRowDef="columns"></tr>
        <tr mat-row *matRowDef="let row; columns: columns"></tr>
      </table>
      @if (!loading() && entries().length === 0) { <p class="empty">No entries.</p> }
      <pm-pager [pager]="pager" (moved)="moved()" />
    </div>
  `,
  styles: `.filters mat-form-field { width: 180px; } .balances { display: flex; gap: 0.5rem; flex-wrap: wrap; }`,
})
export class BalancePage implements OnInit {
  private readonly session = inject(Session);
  readonly columns = ['time', 'source', 'account', 'direction', 'amount', 'transaction'];
  from = '';
  to = '';
  readonly balances = signal<BalanceAmount[]>([]);
  readonly entries = signal<Entry[]>([]);
  readonly loading = signal(false);
  readonly error = signal('');
  readonly pager = new Pager();

  ngOnInit(): void {
    void this.session
      .api(LedgerService.method.getBalance, {})
      .then((balance) => this.balances.set(balance.available))
      .catch((error: unknown) => this.error.set(describeError(error)));
    void this.load();
  }

  search(): void {
    this.pager.reset();
    void this.load();
  }

  moved(): void {
    void this.load();
  }

  private async load(): Promise<void> {
    this.loading.set(true);
    const range = dayRange(this.from, this.to);
    try {
      const response = await this.session.api(LedgerService.method.listBalanceEntries, {
        pageSize: PAGE_SIZE,
        pageToken: this.pager.current(),
        createdGte: range.createdGte && timestampFromDate(range.createdGte),
        createdLt: range.createdLt && timestampFromDate(range.createdLt),
      });
      this.entries.set(response.entries);
      this.pager.nextToken.set(response.nextPageToken);
      this.error.set('');
    } catch (error) {
      this.error.set(describeError(error));
    } finally {
      this.loading.set(false);
    }
  }
}
