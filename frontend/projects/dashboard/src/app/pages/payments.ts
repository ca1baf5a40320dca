import { Component, OnInit, inject, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { MatSelectModule } from '@angular/material/select';
import { MatTableModule } from '@angular/material/table';
import { Router, RouterLink } from '@angular/router';

import { AdminService } from '@gen/paymesh/admin/v1/admin_pb';
import type { Payment } from '@gen/paymesh/payment/v1/payment_pb';
import { MoneyPipe, TimePipe } from '@shared/format';
import { Pager, PagerBar } from '@shared/pager';
import { Session, describeError } from '../session';

const PAGE_SIZE = 25;

/** Payments across merchants: filter by merchant and status, jump to an id, page through. */
@Component({
  selector: 'pm-payments-page',
  imports: [FormsModule, RouterLink, MatTableModule, MatFormFieldModule, MatInputModule, MatSelectModule, MatButtonModule, MoneyPipe, TimePipe, PagerBar],
  template: `
    <h1 class="page-title">Payments</h1>
    <form class="toolbar-row filters" (ngSubmit)="search()" role="search">
      <mat-form-field appearance="outline" subscriptSizing="dynamic">
        <mat-label>Payment id</mat-label>
        <input matInput name="paymentId" [(ngModel)]="paymentId" placeholder="pay_…" data-testid="filter-payment-id">
      </mat-form-field>
      <mat-form-field appearance="outline" subscriptSizing="dynamic">
        <mat-label>Merchant id</mat-label>
        <input matInput name="merchantId" [(ngModel)]="merchantId" placeholder="mer_…" data-testid="filter-merchant">
      </mat-form-field>
      <mat-form-field appearance="outline" subscriptSizing="dynamic">
        <mat-label>Status</mat-label>
        <mat-select name="status" [(ngModel)]="status" data-testid="filter-status">
          <mat-option value="">Any</mat-option>
          @for (s of statuses; track s) { <mat-option [value]="s">{{ s }}</mat-option> }
        </mat-select>
      </mat-form-field>
      <button mat-flat-button type="submit" data-testid="search">Search</button>
    </form>
    @if (error()) { <p class="error-text" role="alert">{{ error() }}</p> }
    <div class="panel table-wrap" tabindex="0" role="region" aria-label="Payments">
      <table mat-table [dataSource]="payments()" data-testid="payments-table">
        <ng-container matColumnDef="id">
          <th mat-header-cell *matHeaderCellDef>Payment</th>
          <td mat-cell *matCellDef="let p"><a [routerLink]="['/payments', p.id]" class="mono">{{ p.id }}</a></td>
        </ng-container>
        <ng-container matColumnDef="merchant">
          <th mat-header-cell *matHeaderCellDef>Merchant</th>
          <td mat-cell *matCellDef="let p" class="mono">{{ p.merchantId }}</td>
        </ng-container>
        <ng-container matColumnDef="amount">
          <th mat-header-cell *matHeaderCellDef class="num">Amount</th>
          <td mat-cell *matCellDef="let p" class="num">{{ p.amount | money: p.currency }}</td>
        </ng-container>
        <ng-container matColumnDef="status">
          <th mat-header-cell *matHeaderCellDef>Status</th>
          <td mat-cell *matCellDef="let p"><span class="status-chip" [class]="p.status">{{ p.status }}</span></td>
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
      @if (!loading() && payments().length === 0) { <p class="empty">No payments match.</p> }
      <pm-pager [pager]="pager" (moved)="moved()" />
    </div>
  `,
  styles: `.filters mat-form-field { width: 220px; }`,
})
export class PaymentsPage implements OnInit {
  private readonly session = inject(Session);
  private readonly router = inject(Router);
  readonly columns = ['id', 'merchant', 'amount', 'status', 'card', 'created'];
  readonly statuses = ['requires_payment_method', 'processing', 'requires_capture', 'succeeded', 'failed', 'canceled'];

  paymentId = '';
  merchantId = '';
  status = '';
  readonly payments = signal<Payment[]>([]);
  readonly loading = signal(false);
  readonly error = signal('');
  readonly pager = new Pager();

  ngOnInit(): void {
    void this.load();
  }

  search(): void {
    const id = this.paymentId.trim();
    if (id) {
      void this.router.navigate(['/payments', id]);
      return;
    }
    this.pager.reset();
    void this.load();
  }

  moved(): void {
    void this.load();
  }

  private async load(): Promise<void> {
    this.loading.set(true);
    this.error.set('');
    try {
      const response = await this.session.api(AdminService.method.searchPayments, {
        merchantId: this.merchantId.trim(),
        status: this.status,
        pageSize: PAGE_SIZE,
        pageToken: this.pager.current(),
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
