import { Component, OnInit, computed, inject, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { MatSelectModule } from '@angular/material/select';
import { MatTableModule } from '@angular/material/table';
import { Router, RouterLink } from '@angular/router';

import { PaymentService, type Payment } from '@gen/paymesh/payment/v1/payment_pb';
import { MoneyPipe, TimePipe } from '@shared/format';
import { Pager, PagerBar } from '@shared/pager';
import { describeError } from '@shared/rest';
import { timestampFromDate } from '@shared/time';
import { dayRange, paymentMatches } from '../figures';
import { Session } from '../session';

const PAGE_SIZE = 25;

/** The merchant's payments: status and date filters, a search, paging. */
@Component({
  selector: 'pm-payments-page',
  imports: [FormsModule, RouterLink, MatTableModule, MatFormFieldModule, MatInputModule, MatSelectModule, MatButtonModule, MoneyPipe, TimePipe, PagerBar],
  template: `
    <h1 class="page-title">Payments</h1>
    <form class="toolbar-row filters" (ngSubmit)="search()" role="search">
      <mat-form-field appearance="outline" subscriptSizing="dynamic" class="wide">
        <mat-label>Search</mat-label>
        <input matInput name="query" [(ngModel)]="query" placeholder="pay_…, description, last 4" data-testid="search-query">
      </mat-form-field>
      <mat-form-field appearance="outline" subscriptSizing="dynamic">
        <mat-label>Status</mat-label>
        <mat-select name="status" [(ngModel)]="status" data-testid="filter-status">
          <mat-option value="">Any</mat-option>
          @for (s of statuses; track s) { <mat-option [value]="s">{{ s }}</mat-option> }
        </mat-select>
      </mat-form-field>
      <mat-form-field appearance="outline" subscriptSizing="dynamic">
        <mat-label>From</mat-label>
        <input matInput type="date" name="from" [(ngModel)]="from" data-testid="filter-from">
      </mat-form-field>
      <mat-form-field appearance="outline" subscriptSizing="dynamic">
        <mat-label>To</mat-label>
        <input matInput type="date" name="to" [(ngModel)]="to" data-testid="filter-to">
      </mat-form-field>
      <button mat-flat-button type="submit" data-testid="search">Search</button>
    </form>
    @if (error()) { <p class="error-text" role="alert">{{ error() }}</p> }
    <div class="panel table-wrap" tabindex="0" role="region" aria-label="Payments">
      <table mat-table [dataSource]="shown()" data-testid="payments-table">
        <ng-container matColumnDef="id">
          <th mat-header-cell *matHeaderCellDef>Payment</th>
          <td mat-cell *matCellDef="let p"><a [routerLink]="['/payments', p.id]" class="mono">{{ p.id }}</a></td>
        </ng-container>
        <ng-container matColumnDef="amount">
          <th mat-header-cell *matHeaderCellDef class="num">Amount</th>
          <td mat-cell *matCellDef="let p" class="num">{{ p.amount | money: p.currency }}</td>
        </ng-container>
        <ng-container matColumnDef="status">
          <th mat-header-cell *matHeaderCellDef>Status</th>
          <td mat-cell *matCellDef="let p"><span class="status-chip" [class]="p.status">{{ p.status }}</span></td>
        </ng-container>
        <ng-container matColumnDef="refunded">
          <th mat-header-cell *matHeaderCellDef class="num">Refunded</th>
          <td mat-cell *matCellDef="let p" class="num">{{ p.amountRefunded ? (p.amountRefunded | money: p.currency) : '' }}</td>
        </ng-container>
        <ng-container matColumnDef="description">
          <th mat-header-cell *matHeaderCellDef>Description</th>
          <td mat-cell *matCellDef="let p">{{ p.description }}</td>
        </ng-container>
        <ng-container matColumnDef="card">
          <th mat-header-cell *matHeaderCellDef>Card</th>
          <td mat-cell *matCellDef="let p">{{ p.card ? p.card.brand + ' •••• ' + p.card.last4 : '' }}</td>
        </ng-container>
        <ng-container matColumnDef="created">
          <th mat-header-cell *matHeaderCellDef>Created</th>
          <td mat-cell *matCellDef="let p">{{ p.createTime | time }}</td>
        </ng-container>
        <tr mat-header-row *matHeaderRowDef="columns"></tr>
        <tr mat-row *matRowDef="let row; columns: columns" [attr.data-testid]="'payment-row-' + row.id"></tr>
      </table>
      @if (!loading() && shown().length === 0) {
        <p class="empty">{{ payments().length ? 'No payment on this page matches the search.' : 'No payments match.' }}</p>
      }
      <pm-pager [pager]="pager" (moved)="moved()">@if (searched()) { · search applied to this page }</pm-pager>
    </div>
  `,
  styles: `.filters mat-form-field { width: 180px; } .filters .wide { width: 260px; }`,
})
export class PaymentsPage implements OnInit {
  private readonly session = inject(Session);
  private readonly router = inject(Router);
  readonly columns = ['id', 'amount', 'status', 'refunded', 'description', 'card', 'created'];
  readonly statuses = ['requires_payment_method', 'processing', 'requires_capture', 'succeeded', 'failed', 'canceled'];

  query = '';
  status = '';
  from = '';
  to = '';
  readonly payments = signal<Payment[]>([]);
  /** The search applied to the page shown (the box may have changed since). */
  readonly searched = signal('');
  readonly shown = computed(() => this.payments().filter((p) => paymentMatches(p, this.searched())));
  readonly loading = signal(false);
  readonly error = signal('');
  readonly pager = new Pager();

  ngOnInit(): void {
    void this.load();
  }

  /** A payment id opens the payment; anything else filters the list. */
  search(): void {
    const text = this.query.trim();
    if (/^pay_[A-Za-z0-9]+$/.test(text)) {
      void this.router.navigate(['/payments', text]);
      return;
    }
    this.searched.set(text);
    this.pager.reset();
    void this.load();
  }

  moved(): void {
    void this.load();
  }

  private async load(): Promise<void> {
    this.loading.set(true);
    this.error.set('');
    const range = dayRange(this.from, this.to);
    try {
      const response = await this.session.api(PaymentService.method.listPayments, {
        status: this.status,
        pageSize: PAGE_SIZE,
        pageToken: this.pager.current(),
        createdGte: range.createdGte && timestampFromDate(range.createdGte),
        createdLt: range.createdLt && timestampFromDate(range.createdLt),
      });
      this.payments.set(response.payments);
      this.pager.nextToken.set(response.nextPageToken);
    } catch (error) {
      this.error.set(describeError(error));
    } finally {
      this.loading.set(false);
    }
  }
}
