import { Component, OnInit, inject, signal } from '@angular/core';
import { FormsModule } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { MatTableModule } from '@angular/material/table';
import { Router, RouterLink } from '@angular/router';

import { AdminService, type Merchant } from '@gen/paymesh/admin/v1/admin_pb';
import { TimePipe } from '@shared/format';
import { Session, describeError } from '../session';

const PAGE_SIZE = 50;

/** Merchants: list and create. */
@Component({
  selector: 'pm-merchants-page',
  imports: [FormsModule, RouterLink, MatTableModule, MatButtonModule, MatFormFieldModule, MatInputModule, TimePipe],
  template: `
    <h1 class="page-title">Merchants</h1>
    @if (session.canMutate()) {
      <section class="panel" aria-labelledby="create-title" data-testid="create-merchant">
        <h2 id="create-title">New merchant</h2>
        <form class="toolbar-row" (ngSubmit)="create()">
          <mat-form-field appearance="outline" subscriptSizing="dynamic">
            <mat-label>Name</mat-label>
            <input matInput name="name" [(ngModel)]="name" required maxlength="200" data-testid="merchant-name">
          </mat-form-field>
          <mat-form-field appearance="outline" subscriptSizing="dynamic">
            <mat-label>Fee (basis points)</mat-label>
            <input matInput name="feeBps" type="number" min="0" max="10000" [(ngModel)]="feeBps" data-testid="merchant-fee-bps">
          </mat-form-field>
          <mat-form-field appearance="outline" subscriptSizing="dynamic">
            <mat-label>Fixed fee (minor units)</mat-label>
            <input matInput name="feeFixed" type="number" min="0" [(ngModel)]="feeFixed" data-testid="merchant-fee-fixed">
          </mat-form-field>
          <button mat-flat-button type="submit" [disabled]="busy() || !name.trim()" data-testid="create-merchant-submit">Create</button>
        </form>
      </section>
    }
    @if (error()) { <p class="error-text" role="alert">{{ error() }}</p> }
    <div class="panel table-wrap" tabindex="0" role="region" aria-label="Merchants">
      <table mat-table [dataSource]="merchants()" data-testid="merchants-table">
        <ng-container matColumnDef="name"><th mat-header-cell *matHeaderCellDef>Name</th><td mat-cell *matCellDef="let m"><a [routerLink]="['/merchants', m.id]">{{ m.name }}</a></td></ng-container>
        <ng-container matColumnDef="id"><th mat-header-cell *matHeaderCellDef>Id</th><td mat-cell *matCellDef="let m" class="mono">{{ m.id }}</td></ng-container>
        <ng-container matColumnDef="fees"><th mat-header-cell *matHeaderCellDef>Fees</th><td mat-cell *matCellDef="let m">{{ m.feeBps / 100 }}% + {{ m.feeFixed }}</td></ng-container>
        <ng-container matColumnDef="created"><th mat-header-cell *matHeaderCellDef>Created</th><td mat-cell *matCellDef="let m">{{ m.createTime | time }}</td></ng-container>
        <tr mat-header-row *matHeaderRowDef="columns"></tr>
        <tr mat-row *matRowDef="let row; columns: columns"></tr>
      </table>
      @if (nextToken()) { <button mat-button (click)="load(nextToken())">Load more</button> }
    </div>
  `,
  styles: `mat-form-field { width: 200px; }`,
})
export class MerchantsPage implements OnInit {
  readonly session = inject(Session);
  private readonly router = inject(Router);
  readonly columns = ['name', 'id', 'fees', 'created'];
  readonly merchants = signal<Merchant[]>([]);
  readonly nextToken = signal('');
  readonly error = signal('');
  readonly busy = signal(false);
  name = '';
  feeBps: number | null = 290;
  feeFixed: number | null = 30;

  ngOnInit(): void {
    void this.load();
  }

  async load(pageToken = ''): Promise<void> {
    try {
      const response = await this.session.api(AdminService.method.listMerchants, { pageSize: PAGE_SIZE, pageToken });
      this.merchants.update((current) => (pageToken ? [...current, ...response.merchants] : response.merchants));
      this.nextToken.set(response.nextPageToken);
    } catch (error) {
      this.error.set(describeError(error));
    }
  }

  async create(): Promise<void> {
    if (this.busy()) return;
    this.busy.set(true);
    this.error.set('');
    try {
      const merchant = await this.session.api(AdminService.method.createMerchant, {
        name: this.name.trim(),
        feeBps: this.feeBps ?? undefined,
        feeFixed: this.feeFixed === null ? undefined : BigInt(Math.trunc(this.feeFixed)),
      });
      await this.router.navigate(['/merchants', merchant.id]);
    } catch (error) {
      this.error.set(describeError(error));
    } finally {
      this.busy.set(false);
    }
  }
}
