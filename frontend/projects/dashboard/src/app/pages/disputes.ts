import { Component, OnInit, inject, input, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { MatTableModule } from '@angular/material/table';
import { RouterLink } from '@angular/router';

import { AdminService } from '@gen/paymesh/admin/v1/admin_pb';
import type { Dispute } from '@gen/paymesh/payment/v1/payment_pb';
import { MoneyPipe, TimePipe } from '@shared/format';
import { Pager, PagerBar } from '@shared/pager';
import { Session, describeError } from '../session';

const PAGE_SIZE = 25;

/** Disputes across merchants, newest first: filter by payment (`?payment=`), page through. */
@Component({
  selector: 'pm-disputes-page',
  imports: [FormsModule, RouterLink, MatTableModule, MatFormFieldModule, MatInputModule, MatButtonModule, MoneyPipe, TimePipe, PagerBar],
  template: `
    <h1 class="page-title">Disputes</h1>
    <form class="toolbar-row filters" (ngSubmit)="search()" role="search">
      <mat-form-field appearance="outline" subscriptSizing="dynamic">
        <mat-label>Payment id</mat-label>
        <input matInput name="paymentId" [(ngModel)]="paymentId" placeholder="pay_…" data-testid="filter-payment-id">
      </mat-form-field>
      <button mat-flat-button type="submit" data-testid="search">Search</button>
    </form>
    @if (error()) { <p class="error-text" role="alert" data-testid="disputes-error">{{ error() }}</p> }
    <div class="panel table-wrap" tabindex="0" role="region" aria-label="Disputes">
      <table mat-table [dataSource]="disputes()" data-testid="disputes-table">
        <ng-container matColumnDef="id">
          <th mat-header-cell *matHeaderCellDef>Dispute</th>
          <td mat-cell *matCellDef="let d" class="mono">{{ d.id }}</td>
        </ng-container>
        <ng-container matColumnDef="payment">
          <th mat-header-cell *matHeaderCellDef>Payment</th>
          <td mat-cell *matCellDef="let d"><a [routerLink]="['/payments', d.paymentId]" class="mono" data-testid="dispute-payment">{{ d.paymentId }}</a></td>
        </ng-container>
        <ng-container matColumnDef="merchant">
          <th mat-header-cell *matHeaderCellDef>Merchant</th>
          <td mat-cell *matCellDef="let d" class="mono">{{ d.merchantId }}</td>
        </ng-container>
        <ng-container matColumnDef="amount">
          <th mat-header-cell *matHeaderCellDef class="num">Amount</th>
          <td mat-cell *matCellDef="let d" class="num" data-testid="dispute-amount">{{ d.amount | money: d.currency }}</td>
        </ng-container>
        <ng-container matColumnDef="reason">
          <th mat-header-cell *matHeaderCellDef>Reason</th>
          <td mat-cell *matCellDef="let d" data-testid="dispute-reason">{{ d.reason }}</td>
        </ng-container>
        <ng-container matColumnDef="status">
          <th mat-header-cell *matHeaderCellDef>Status</th>
          <td mat-cell *matCellDef="let d"><span class="status-chip" [class]="d.status" data-testid="dispute-status">{{ d.status }}</span></td>
        </ng-container>
        <ng-container matColumnDef="created">
          <th mat-header-cell *matHeaderCellDef>Created</th>
          <td mat-cell *matCellDef="let d" class="when">{{ d.createTime | time }}</td>
        </ng-container>
        <ng-container matColumnDef="due">
          <th mat-header-cell *matHeaderCellDef>Evidence due</th>
          <td mat-cell *matCellDef="let d" class="when" data-testid="dispute-due">
            {{ d.evidenceDetails?.dueBy | time }}
            @if (d.evidenceDetails?.pastDue) { <span class="error-text"> · past due</span> }
          </td>
        </ng-container>
        <tr mat-header-row *matHeaderRowDef="columns"></tr>
        <tr mat-row *matRowDef="let row; columns: columns" [attr.data-testid]="'dispute-row-' + row.id"></tr>
      </table>
      @if (!loading() && !error() && disputes().length === 0) { <p class="empty" data-testid="disputes-empty">No disputes match.</p> }
      <pm-pager [pager]="pager" (moved)="moved()" />
    </div>
  `,
  styles: `.filters mat-form-field { width: 260px; }`,
})
export class DisputesPage implements OnInit {
  private readonly session = inject(Session);
  /** The `?payment=` query parameter: the filter to open the page with. */
  readonly payment = input<string>();
  readonly columns = ['id', 'payment', 'merchant', 'amount', 'reason', 'status', 'created', 'due'];

  paymentId = '';
  readonly disputes = signal<Dispute[]>([]);
  readonly loading = signal(false);
  readonly error = signal('');
  readonly pager = new Pager();

  ngOnInit(): void {
    this.paymentId = this.payment() ?? '';
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
      const response = await this.session.api(AdminService.method.searchDisputes, {
        paymentId: this.paymentId.trim(),
        pageSize: PAGE_SIZE,
        pageToken: this.pager.current(),
      });
      this.disputes.set(response.disputes);
      this.pager.nextToken.set(response.nextPageToken);
    } catch (error) {
      this.disputes.set([]);
      this.pager.nextToken.set('');
      this.error.set(describeError(error));
    } finally {
      this.loading.set(false);
    }
  }
}
