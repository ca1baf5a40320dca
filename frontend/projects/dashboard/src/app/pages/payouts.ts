import { Component, OnInit, inject, input, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { MatSelectModule } from '@angular/material/select';
import { MatTableModule } from '@angular/material/table';
import { RouterLink } from '@angular/router';

import { AdminService } from '@gen/paymesh/admin/v1/admin_pb';
import type { Payout } from '@gen/paymesh/payment/v1/payment_pb';
import { MoneyPipe, TimePipe } from '@shared/format';
import { Pager, PagerBar } from '@shared/pager';
import { Session, describeError } from '../session';

const PAGE_SIZE = 25;

/** Payouts to merchants' banks across merchants: filter by merchant (`?merchant=`) and status (`?status=`). */
@Component({
  selector: 'pm-payouts-page',
  imports: [FormsModule, RouterLink, MatTableModule, MatFormFieldModule, MatInputModule, MatSelectModule, MatButtonModule, MoneyPipe, TimePipe, PagerBar],
  template: `
    <h1 class="page-title">Payouts</h1>
    <form class="toolbar-row filters" (ngSubmit)="search()" role="search">
      <mat-form-field appearance="outline" subscriptSizing="dynamic">
        <mat-label>Merchant id</mat-label>
        <input matInput name="merchantId" [(ngModel)]="merchantId" placeholder="mer_…" data-testid="filter-merchant">
      </mat-form-field>
      <mat-form-field appearance="outline" subscriptSizing="dynamic">
        <mat-label>Status</mat-label>
        <mat-select name="status" [(ngModel)]="statusFilter" data-testid="filter-status">
          <mat-option value="">Any</mat-option>
          @for (s of statuses; track s) { <mat-option [value]="s">{{ s }}</mat-option> }
        </mat-select>
      </mat-form-field>
      <button mat-flat-button type="submit" data-testid="search">Search</button>
    </form>
    @if (error()) { <p class="error-text" role="alert" data-testid="payouts-error">{{ error() }}</p> }
    <div class="panel table-wrap" tabindex="0" role="region" aria-label="Payouts">
      <table mat-table [dataSource]="payouts()" data-testid="payouts-table">
        <ng-container matColumnDef="id">
          <th mat-header-cell *matHeaderCellDef>Payout</th>
          <td mat-cell *matCellDef="let p" class="mono">{{ p.id }}</td>
        </ng-container>
        <ng-container matColumnDef="merchant">
          <th mat-header-cell *matHeaderCellDef>Merchant</th>
          <td mat-cell *matCellDef="let p"><a [routerLink]="['/merchants', p.merchantId]" class="mono">{{ p.merchantId }}</a></td>
        </ng-container>
        <ng-container matColumnDef="amount">
          <th mat-header-cell *matHeaderCellDef class="num">Amount</th>
          <td mat-cell *matCellDef="let p" class="num" data-testid="payout-amount">{{ p.amount | money: p.currency }}</td>
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
          <td mat-cell *matCellDef="let p" data-testid="payout-method">{{ p.method }}</td>
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
      @if (!loading() && !error() && payouts().length === 0) { <p class="empty" data-testid="payouts-empty">No payouts match.</p> }
      <pm-pager [pager]="pager" (moved)="moved()" />
    </div>
  `,
  styles: `.filters mat-form-field { width: 220px; }`,
})
export class PayoutsPage implements OnInit {
  private readonly session = inject(Session);
  /** The `?merchant=` query parameter: the filter to open the page with. */
  readonly merchant = input<string>();
  /** The `?status=` query parameter, such as "failed" (the overview links there). */
  readonly status = input<string>();
  readonly columns = ['id', 'merchant', 'amount', 'status', 'method', 'bank', 'created', 'finished'];
  readonly statuses = ['pending', 'in_transit', 'paid', 'failed', 'canceled'];

  merchantId = '';
  statusFilter = '';
  readonly payouts = signal<Payout[]>([]);
  readonly loading = signal(false);
  readonly error = signal('');
  readonly pager = new Pager();

  ngOnInit(): void {
    this.merchantId = this.merchant() ?? '';
    const status = this.status() ?? '';
    this.statusFilter = this.statuses.includes(status) ? status : '';
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
    this.error.set('');
    try {
      const response = await this.session.api(AdminService.method.searchPayouts, {
        merchantId: this.merchantId.trim(),
        status: this.statusFilter,
        pageSize: PAGE_SIZE,
        pageToken: this.pager.current(),
      });
      this.payouts.set(response.payouts);
      this.pager.nextToken.set(response.nextPageToken);
    } catch (error) {
      this.payouts.set([]);
      this.pager.nextToken.set('');
      this.error.set(describeError(error));
    } finally {
      this.loading.set(false);
    }
  }
}
